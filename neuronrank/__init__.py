"""NeuronRank Studio: per-neuron statistics, scoring and pruning of gated-MLP language models."""

from neuronrank.errors import UserError

__all__ = ["UserError"]
__version__ = "0.1.0"
