"""The pruning methods: one entry each, saying what the method is and how it scores.

What it is: whether it needs calibration statistics, uses the NeuronRank exponents, addresses MLP neurons
only, and its own setup as its paper / code runs it: the unstructured comparison group, the calibration
order (always, or by default), the tie rule (masks.py), the structured scope and bias compensation, the
metric OWL's outlier ratio is taken from, the sparsity types it supports. How it scores:

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
    ria             (|W_jk| / Σ_j |W_jk| + |W_jk| / Σ_k |W_jk|) · ‖X_k‖₂^a, a = 0.5: each weight's share
                    of its input column and of its output row, times the input norm (RIA, Zhang et al.
                    2024); layer by layer, one threshold per matrix with RIA's `<=` rule, by default
    flap            structured only: FLAP's fluctuation of the down_proj input × ‖W_down[:, j]‖² (WIFV),
                    standardised per layer, one ranking across the layers, the pruned neurons' mean output
                    added back as a down_proj bias (An et al. 2024)

Structured neuron scores: NeuronRank-OLD's score, magnitude ‖gate row‖₂ (the |W| factor alone), wanda_sp
(FLAP: mean_r |W_down[r, i]| · ‖x_i‖₂), random, or FLAP's WIFV.

OWL (`--layer-sparsity owl`, prune/layer_sparsity.py) is not a method: it gives each layer its own sparsity
from the outlier ratio of a metric — Wanda's for every method as OWL's code does (magnitude and SparseGPT
too), the method's own |W_jk|·score_i for neuronrank_old (`outlier_metric`).

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
# how many entries a comparison group prunes and which ties go (prune/masks.py): "exact" = exactly
# round(n·r), ties to the lowest index (the project's); "upstream" = the originals' (Wanda's per-row
# int(n·r), RIA's / Wanda's magnitude `<=` sorted[int(n·r)] per matrix; structured: FLAP's rules)
TIE_RULES = ("exact", "upstream")
RIA_A = 0.5  # RIA's exponent of the input norm (its --a)
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
    default_calibration: str = "one-pass"  # its own order where --calibration may choose
    tie_rule: str = "exact"  # TIE_RULES
    scope: str = "layer"  # its own structured scope
    compensate: str = "none"  # its own structured bias compensation: "none" | "mean"
    outlier_metric: str | None = "wanda"  # OWL's outlier ratio from: "wanda" | "own" (its metric) | None
    needs_moments: bool = False  # needs the down_proj input's fluctuation (statistics collected since FLAP)

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


_F32_TINY = 1.1754943508222875e-38  # float32's smallest normal number


def _ria(w, t, ctx):
    # float32 as RIA's float32 runs; a zero row or column sum (all its weights 0) gives 0, not 0/0 = NaN:
    # the clamp changes no other value
    aw = w.float().abs()
    rel = aw / aw.sum(dim=0).clamp_min(_F32_TINY) + aw / aw.sum(dim=1, keepdim=True).clamp_min(_F32_TINY)
    return rel * ctx.input_norm(t, w.device)[None, :] ** RIA_A  # sqrt first, then the power, as RIA


def _flap_neurons(ctx):
    """FLAP's WIFV_j = fluc_j · Σ_i W_down[i, j]² (float32, as its code), standardised per layer with the
    unbiased std (its AL-AM ranking compares the layers' z-scores)."""
    stats = ctx.stats
    fluc = stats.down_input_variance() if ctx.fluctuation == "variance" else stats.flap_fluctuation()
    out = []
    for layer, col in enumerate(ctx.down_column_sq()):
        m = col.new_tensor(fluc[layer]) * col
        sd = m.std()
        out.append(((m - m.mean()) / sd if float(sd) > 0 else m * 0).cpu().numpy())
    return np.stack(out)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("neuronrank_old", "NeuronRank-OLD: |W_jk| × score_i, score = |W|^α × TF^β × IDF^γ", needs_stats=True,
           uses_exponents=True, mlp_only=True, metric=_neuronrank_old, neuron_score=_neuronrank_old_neurons,
           observer="stats", neuron_scaled=True, outlier_metric="own"),
    Method("magnitude", "Magnitude: |W_jk|", needs_stats=False, metric=_magnitude, neuron_score=_magnitude_neurons),
    Method("wanda", "Wanda: |W_jk| × ‖X_k‖₂", needs_stats=True, group="row", metric=_wanda,
           neuron_score=_wanda_neurons, observer="stats"),
    Method("random", "Random: seeded uniform noise (the control)", needs_stats=False, metric=_random,
           neuron_score=_random_neurons),
    Method("sparsegpt", "SparseGPT: OBS reconstruction of the kept weights, layer by layer", needs_stats=True,
           calibration="sequential", sparsity_types=("unstructured", "2:4", "4:8"), observer="hessian"),
    Method("ria", "RIA: (|W_jk|/Σ_j|W_jk| + |W_jk|/Σ_k|W_jk|) × ‖X_k‖₂^0.5, layer by layer, per matrix (<=)",
           needs_stats=True, metric=_ria, observer="stats", default_calibration="sequential", tie_rule="upstream",
           sparsity_types=("unstructured", "2:4", "4:8")),
    Method("flap", "FLAP: fluctuation × ‖W_down[:, j]‖², standardised, one ranking across layers, bias-compensated",
           needs_stats=True, mlp_only=True, sparsity_types=("structured",), neuron_score=_flap_neurons,
           scope="global", compensate="mean", tie_rule="upstream", outlier_metric=None, needs_moments=True),
)}
