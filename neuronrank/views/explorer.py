"""What the Exponents page shows, computed: score histograms with the cut a sparsity makes, the fraction
of each layer a global vs a per-layer threshold prunes, the overlap with the baselines' rankings, the
lowest neurons, ties at the cut. numpy and pandas only (no streamlit, no model), benchmarked in
bench/app_latency.py.

The page itself computes these in the browser on every slider input (components/explorer_core.js, the same
rules on float64 arrays); tests/e2e/test_explorer_numbers.py checks that its numbers are these. Python uses
this module for the page's CSV downloads and as that reference.

Frames and arrays are layer-major (see views/entries.py): a layer's rows are contiguous, which is what
keeps a slider move cheap. Scores always come from `neuronrank.analysis.scoring.score`: this module bins,
ranks and tabulates them, it never computes a score of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd

from neuronrank.analysis import scoring

HIST_BINS = 100
LOWEST_N = 50

# Exponent presets (α, β, γ, sparsity or None) from the original method's usage guide; a preset that
# names a sparsity regime sets the sparsity slider too.
PRESETS: dict[str, tuple[float, float, float, float | None]] = {
    "balanced": (1.0, 1.0, 1.0, None),
    "high sparsity": (1.5, 1.0, 1.5, 0.7),
    "low sparsity": (2.0, 0.5, 0.5, 0.3),
    "pure magnitude": (1.0, 0.0, 0.0, None),
    "pure TF-IDF": (0.0, 1.0, 1.0, None),
}


def neuron_arrays(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The columns a slider move needs, as contiguous arrays, plus the baselines' neuron scores.

    `scoring.score` accepts this mapping like a frame (it reads w_norm, tf, idf), without the
    per-call column conversion a DataFrame costs.
    """
    f64 = lambda c: np.ascontiguousarray(frame[c].to_numpy(dtype=np.float64))  # noqa: E731
    return {
        "layer": frame["layer"].to_numpy(dtype=np.int32),
        "neuron": frame["neuron"].to_numpy(dtype=np.int32),
        "w_norm": f64("w_norm"),
        "tf": f64("tf"),
        "idf": f64("idf"),
        "n_active": frame["n_active"].to_numpy(dtype=np.int64),
        "tokens": frame["tokens"].to_numpy(dtype=np.int64),
        # baselines at neuron granularity: magnitude = ‖gate row‖, Wanda = mean|down col| × ‖x_down‖
        "magnitude": f64("w_norm"),
        "wanda": f64("down_abs_mean") * f64("x_norm_down"),
    }


# What the browser scores from (the Exponents explorer and the Roles scatter, components/): float64 columns in the
# table's layer-major order. Layer and neuron are implied by that order (row = layer × width + neuron), so they
# are not sent; the magnitude baseline is w_norm itself.
BROWSER_COLUMNS = {"w": "w_norm", "tf": "tf", "idf": "idf", "wanda": "wanda"}


def browser_columns(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The columns a browser needs for every slider move, as contiguous float64 arrays (name -> array).
    Refuses a table that is not layer-major with equal widths (the browser derives layer and neuron)."""
    layers = np.asarray(arrays["layer"])
    n_layers = int(layers[-1]) + 1 if layers.size else 0
    width = layers.size // max(n_layers, 1)
    if layers.size != n_layers * width or not (layers.reshape(n_layers, width) == np.arange(n_layers)[:, None]).all() \
            or not (np.asarray(arrays["neuron"]).reshape(n_layers, width) == np.arange(width)).all():
        raise ValueError("the browser needs a layer-major table with equal layer widths")
    return {k: np.ascontiguousarray(arrays[src], dtype=np.float64) for k, src in BROWSER_COLUMNS.items()}


def layer_slice(layers: np.ndarray, layer: int) -> slice:
    """Rows of one layer (the frame is layer-major, so they are contiguous)."""
    lo, hi = np.searchsorted(layers, [layer, layer + 1])
    return slice(int(lo), int(hi))


# ----------------------------------------------------------------------------------------------
# scores (Exponents page)


@dataclass(frozen=True)
class Hist:
    """A fixed-bin histogram. With `log`, edges are log10(score) and zero scores are counted apart."""

    edges: np.ndarray
    counts: np.ndarray
    log: bool
    zeros: int  # scores equal to 0 (left out of a log histogram, counted in a linear one)
    dropped: int  # non-finite scores (overflow at large exponents), left out of both
    total: int

    @property
    def centers(self) -> np.ndarray:
        return (self.edges[:-1] + self.edges[1:]) / 2

    @property
    def widths(self) -> np.ndarray:
        return np.diff(self.edges)


def histogram(scores: np.ndarray, bins: int = HIST_BINS, log: bool = False) -> Hist:
    """Bin scores into `bins` equal bins over their range (of log10(score) with `log`)."""
    s = np.asarray(scores, dtype=np.float64)
    total = int(s.size)
    dropped = 0
    # min/max are cheap; only filter when something is non-finite (rare: overflow)
    if total and not (np.isfinite(s.min()) and np.isfinite(s.max())):
        finite = np.isfinite(s)
        dropped = total - int(np.count_nonzero(finite))
        s = s[finite]
    zeros = int(np.count_nonzero(s == 0))
    if log:
        # log10 of negatives is undefined; scores are never negative (exponents ≥ 0, bases ≥ 0)
        s = np.log10(s[s > 0])
    if s.size == 0:
        return Hist(np.linspace(0.0, 1.0, bins + 1), np.zeros(bins, dtype=np.int64), log, zeros, dropped, total)
    counts, edges = np.histogram(s, bins=bins)
    return Hist(edges, counts, log, zeros, dropped, total)


def score_histograms(arrays: Mapping[str, np.ndarray], alpha: float, beta: float, gamma: float,
                     layer: int | None = None, log: bool = False, bins: int = HIST_BINS):
    """What one slider move computes for the charts: scores, the overall histogram, one layer's.

    -> (scores, overall Hist, layer Hist or None).
    """
    scores = scoring.score(arrays, alpha, beta, gamma)
    overall = histogram(scores, bins, log)
    per_layer = None if layer is None else histogram(scores[layer_slice(arrays["layer"], layer)], bins, log)
    return scores, overall, per_layer


def prune_threshold(scores: np.ndarray, sparsity: float, log: bool = False) -> float | None:
    """The score at which a ranking stops pruning: the largest of the round(n × sparsity) lowest scores
    (on the log10 axis with `log`). None when nothing is pruned or the value has no place on the axis."""
    s = np.asarray(scores, dtype=np.float64)
    k = int(round(float(sparsity) * s.size))
    if k <= 0 or s.size == 0:
        return None
    t = float(np.partition(s, k - 1)[k - 1])
    if not np.isfinite(t) or (log and t <= 0):
        return None
    return float(np.log10(t)) if log else t


def ties_at_cut(scores: np.ndarray, layers: np.ndarray, sparsity: float, per_layer: bool = False) -> dict:
    """How much of a pruned set the row order chose: among neurons whose score equals the cut, some are pruned
    and others kept, by position alone (scoring.lowest breaks ties by row order, layer 0 first).

    -> {"tied": neurons sharing the cut's score, "by_order": pruned ones among them that a kept neuron ties
    with, "pruned": the set's size}. α = β = γ = 0 ties every score: then by_order is the whole pruned set."""
    s = np.asarray(scores, dtype=np.float64)
    groups = [s] if not per_layer else [s[layer_slice(layers, g)] for g in np.unique(layers)]
    tied = by_order = pruned = 0
    for g in groups:
        k = int(round(float(sparsity) * g.size))
        pruned += k
        if k <= 0:
            continue
        t = np.partition(g, k - 1)[k - 1]
        below, equal = int(np.count_nonzero(g < t)), int(np.count_nonzero(g == t))
        if equal > k - below:  # some neurons at the cut's score are kept: the order decided
            tied += equal
            by_order += k - below
    return {"tied": tied, "by_order": by_order, "pruned": pruned}


def pruned_fraction(scores: np.ndarray, layers: np.ndarray, sparsity: float) -> pd.DataFrame:
    """Per layer: the fraction of neurons a global threshold and a per-layer threshold would prune."""
    n_layers = int(layers[-1]) + 1 if len(layers) else 0
    sizes = np.bincount(layers, minlength=n_layers)
    out = {"layer": np.arange(n_layers)}
    for name, per_layer in (("global", False), ("per_layer", True)):
        mask = scoring.lowest(scores, layers, sparsity, per_layer=per_layer)
        out[name] = np.bincount(layers[mask], minlength=n_layers) / np.maximum(sizes, 1)
    return pd.DataFrame(out)


# Neuron-level baselines, named as on every page. At neuron granularity magnitude is ‖gate row‖₂ and
# Wanda is FLAP's wanda-sp score mean_r |W_down[r, i]| · ‖x_i‖₂ (what structured Wanda prunes by).
BASELINES = {"magnitude": "magnitude", "wanda": "Wanda"}
BASELINE_NOTE = ("Neuron-level baselines: magnitude = ‖gate_proj row‖₂; Wanda = mean |down_proj column| × "
                 "‖x‖₂ of its input (FLAP's wanda-sp, the score structured Wanda prunes by).")


def ranking_overlap(scores: np.ndarray, arrays: Mapping[str, np.ndarray], sparsity: float,
                    per_layer: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Jaccard overlap of the pruned set with each baseline's pruned set at the same sparsity.

    -> (summary: one row per baseline, per-layer: one row per layer and a column per baseline).
    Per-layer values are the overlap inside each layer of the pruned sets chosen with `per_layer`.
    """
    layers = arrays["layer"]
    rows, per = [], {"layer": np.unique(layers)}
    for name, label in BASELINES.items():
        o = scoring.overlap(scores, arrays[name], sparsity, layers=layers, per_layer=per_layer)
        rows.append({"baseline": label, "jaccard": o["jaccard"], "shared": o["shared"], "pruned": o["pruned"]})
        per[name] = [o["per_layer"][int(g)] for g in per["layer"]]
    return pd.DataFrame(rows), pd.DataFrame(per)


def lowest_neurons(arrays: Mapping[str, np.ndarray], scores: np.ndarray, n: int = LOWEST_N) -> pd.DataFrame:
    """The n lowest-scoring neurons in the order of a stable argsort of the scores (ties: row order)."""
    scores = np.asarray(scores)
    n = min(int(n), scores.size)
    if n <= 0:
        idx = np.zeros(0, dtype=np.int64)
    elif n == scores.size:
        idx = np.argsort(scores, kind="stable")
    else:
        # partition instead of a full sort (2.3M rows: ms, not 100s of ms); every row tied with the
        # n-th value is a candidate, and a stable sort of the candidates (in row order) breaks ties
        # exactly as a stable argsort of everything would
        kth = np.partition(scores, n - 1)[n - 1]
        cand = np.flatnonzero(scores <= kth)
        idx = cand[np.argsort(scores[cand], kind="stable")[:n]]
    return pd.DataFrame({
        "rank": np.arange(1, idx.size + 1), "layer": arrays["layer"][idx], "neuron": arrays["neuron"][idx],
        "tf": arrays["tf"][idx], "idf": arrays["idf"][idx], "w_norm": arrays["w_norm"][idx],
        "score": scores[idx],
    })
