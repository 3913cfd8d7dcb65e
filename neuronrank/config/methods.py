"""The pruning methods: one entry each, saying what the method is and how it scores.

What it is: whether it needs calibration statistics, uses the NeuronRank exponents, addresses MLP neurons
only, its own unstructured comparison group (its paper's / upstream's), the calibration order it always
uses, the sparsity types it supports. How it scores:

    metric(w, target, ctx)  unstructured and N:M: a metric per weight of one target linear, the lowest
                            `ratio` of each comparison group is pruned (prune/one_pass.py)
    neuron_score(ctx)       structured: [layers, width] per neuron, the lowest neurons are removed
                            (prune/structured.py); NeuronRank-OLD's weight metric scales |W| by it too
    observer                sequential calibration: "stats" gathers the layer's statistics from the
                            already pruned model and applies the metric; "hessian" is SparseGPT's OBS
                            reconstruction (prune/sequential.py)

    magnitude       |W_jk|
    wanda           |W_jk| · ‖X_k‖₂             (input norms from the same calibration pass)
    neuronrank_old  |W_jk| · score_i            (i = the neuron: row of gate/up, column of down)
    random          uniform noise, seeded       (the control every paper needs)
    sparsegpt       OBS reconstruction per layer, always layer by layer

Structured neuron scores: NeuronRank-OLD's score, magnitude ‖gate row‖₂ (the |W| factor alone), wanda_sp
(FLAP: mean_r |W_down[r, i]| · ‖x_i‖₂), or random.

Scorers get the weight `w` in its own dtype (a torch tensor) and `ctx`, the prune context
(prune/context.py: the statistics, the seed, the exponents, tensors on the weight's device): they use tensor
methods and the context's helpers, so this module imports no torch and the app reads the registry.
Adding a method is one entry here (plus its tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from neuronrank.analysis import scoring

SPARSITY_TYPES = ("unstructured", "structured", "2:4", "4:8")
GROUPS = ("matrix", "row")
CALIBRATIONS = ("one-pass", "sequential")
TARGETS = ("mlp", "all")
# the one reason structured pruning is one-pass (the Prune page shows it; validation says it)
STRUCTURED_ONE_PASS = "structured pruning ranks neurons from one-pass statistics"


def nm(sparsity_type: str) -> tuple[int, int]:
    """"2:4" -> (2, 4): N pruned of every M consecutive weights."""
    n, m = sparsity_type.split(":")
    return int(n), int(m)


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    needs_stats: bool
    uses_exponents: bool = False
    mlp_only: bool = False  # its scores address MLP neurons: it cannot prune attention projections
    group: str = "matrix"  # its own unstructured comparison group
    calibration: str | None = None  # the calibration order it always uses; None: --calibration chooses
    sparsity_types: tuple[str, ...] = SPARSITY_TYPES
    metric: Callable | None = None
    neuron_score: Callable | None = None
    observer: str | None = None  # layer-by-layer calibration: "stats" | "hessian"; None: it has none
    # its metric is |W| scaled by neuron_score along each neuron's line: a search's trials reuse the sorted
    # lines of |W| (prune/incremental.py)
    neuron_scaled: bool = False

    def locked_calibration(self, sparsity_type: str) -> tuple[str, str] | None:
        """(the calibration order, why) where this method / sparsity type fixes it; None where
        --calibration chooses."""
        if not self.needs_stats:
            return "none", f"{self.name} uses no calibration statistics"
        if self.calibration is not None:
            return self.calibration, f"{self.name} always calibrates layer by layer"
        if sparsity_type == "structured":
            return "one-pass", STRUCTURED_ONE_PASS
        return None

    @property
    def sparsity_text(self) -> str:
        """The sparsity types it supports, as a message names them ("unstructured or N:M")."""
        kinds = [t for t in self.sparsity_types if ":" not in t]
        return " or ".join(kinds + (["N:M"] if any(":" in t for t in self.sparsity_types) else []))

    def prunes_mlp_only(self, sparsity_type: str) -> bool:
        """Only the MLP linears can be pruned: NeuronRank scores and structured pruning address MLP neurons."""
        return self.mlp_only or sparsity_type == "structured"


# ----------------------------------------------------------------------------------------------
# scorers. Products with the float32 factors promote to float32 and equal float32(W).abs() * factor bit for
# bit, without a float32 copy of W first.


def _magnitude(w, t, ctx):
    # |W| is exact in any float format: compare the weights themselves (a bf16 sort is half the bytes);
    # float64 weights compare as float32, as the metrics always have (masks stay identical)
    return w.abs() if w.element_size() < 8 else w.float().abs()


def _wanda(w, t, ctx):
    return w.abs() * ctx.input_norm(t, w.device)[None, :]


def _neuronrank_old(w, t, ctx):
    return w.abs() * ctx.neuron_factor(t, w.device)


def _random(w, t, ctx):
    return ctx.noise(t, w)


def _neuronrank_old_neurons(ctx):
    stats = ctx.stats
    return scoring.score(stats, *ctx.exponents).reshape(stats.n_layers, stats.width)


def _wanda_neurons(ctx):  # FLAP's wanda_sp: mean_r |W_down[r, i]| * ||x_i||
    return ctx.stats.down_abs_mean * ctx.stats.input_norm("down_in")


def _magnitude_neurons(ctx):
    return ctx.stats.w_norm if ctx.stats is not None else ctx.gate_norms()


def _random_neurons(ctx):
    return np.random.default_rng(ctx.seed).random(ctx.shape)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("neuronrank_old", "NeuronRank-OLD: |W_jk| × score_i, score = |W|^α × TF^β × IDF^γ", needs_stats=True,
           uses_exponents=True, mlp_only=True, metric=_neuronrank_old, neuron_score=_neuronrank_old_neurons,
           observer="stats", neuron_scaled=True),
    Method("magnitude", "Magnitude: |W_jk|", needs_stats=False, metric=_magnitude, neuron_score=_magnitude_neurons),
    Method("wanda", "Wanda: |W_jk| × ‖X_k‖₂", needs_stats=True, group="row", metric=_wanda,
           neuron_score=_wanda_neurons, observer="stats"),
    Method("random", "Random: seeded uniform noise (the control)", needs_stats=False, metric=_random,
           neuron_score=_random_neurons),
    Method("sparsegpt", "SparseGPT: OBS reconstruction of the kept weights, layer by layer", needs_stats=True,
           calibration="sequential", sparsity_types=("unstructured", "2:4", "4:8"), observer="hessian"),
)}
