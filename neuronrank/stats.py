"""The statistics pass, as the README's example and the design contract name it (`neuronrank.stats.collect`):
a face over engine/collect.py and analysis/neuron_stats.py. Nothing inside the package imports it."""

from neuronrank.analysis.neuron_stats import SITES, NeuronStats, merge
from neuronrank.engine.collect import batched, collect

__all__ = ["SITES", "NeuronStats", "batched", "collect", "merge"]
