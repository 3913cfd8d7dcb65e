"""NeuronRank Studio: per-neuron statistics, scoring and pruning of gated-MLP language models.

The rooms, in the direction of the data flow: a room imports only rooms above it in this list, and no
module imports another that imports it back. The torch rooms are engine, prune and evaluation.

    errors       UserError (with the request field it concerns), Terminated
    analysis     NeuronStats, the score, roles and rankings; numbers (numpy only)
    config       the request fields, the method registry, the protocols (no torch)
    data         paths, model specs, text, token streams, the statistics cache, input checks (no torch)
    engine       models, windows, the statistics pass, statistics through the cache, torchrun
    prune        masks, the prune context, one-pass, structured, sequential, SparseGPT, export
    evaluation   perplexity (+ the dense cache), zero-shot
    runs         the record of runs: the run store, progress messages (no torch)
    search       the Optuna study (no torch) and a worker's model
    queue        the run kinds, and the queue with its dispatcher and workers (no torch)
    views        what the app's pages show (no torch)
    cli          `python -m neuronrank ...`

`stats`, `scoring`, `models` and `corpora` are faces: the README's and the design's names for what moved
into the rooms. Nothing inside the package imports them.
"""

from neuronrank.errors import UserError

__all__ = ["UserError"]
__version__ = "0.1.0"
