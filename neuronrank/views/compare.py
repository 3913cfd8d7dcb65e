"""What the Compare page shows, computed: two statistics entries of the same model side by side — does the
ranking depend on the calibration text, the activation site, the seed, --skip-first? numpy and pandas only.

    check_comparable(params_a, params_b, shape_a, shape_b)   refuse entries of different models (one line)
    param_differences(params_a, params_b)                    the calibration settings in which they differ
    rank_correlations(frame_a, frame_b, α, β, γ)             per layer: Spearman ρ of TF, IDF and the score
    prune_overlap(frame_a, frame_b, α, β, γ, sparsity)       Jaccard of the neurons each would prune: per
                                                             layer, all layers (per-layer cut), global cut
    chance_jaccard(sparsity)                                 what two unrelated rankings would share
    role_transitions(frame_a, frame_b, quantile)             5 × 5 matrix: role in A (rows) -> role in B
    paired_sample(frame_a, frame_b, column)                  a column of A against the same neuron's in B

Frames are stats tables (`NeuronStats.to_frame()`): layer-major, every layer the same width, so both
entries' rows are the same neurons in the same order.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Mapping

import numpy as np
import pandas as pd

from neuronrank.analysis import ablation, scoring
from neuronrank.config.requests import CalibrationFields
from neuronrank.errors import UserError
from neuronrank.views.entries import STATS_PARAM_NAMES

SCATTER_MAX = 20_000
ROLE_ORDER = ablation.CLASSES  # critical, important, moderate, prune-first, dead


def _model_name(params: Mapping) -> str:
    return str(params.get("model", "?"))


def check_comparable(params_a: Mapping, params_b: Mapping, shape_a=None, shape_b=None) -> None:
    """Two entries can be compared neuron by neuron only when they are of the same weights: the model's
    identity recorded in each entry (its spec and a fingerprint of its files) must agree."""
    ida, idb = params_a.get("model_identity"), params_b.get("model_identity")
    same = ida == idb if ida is not None and idb is not None else _model_name(params_a) == _model_name(params_b)
    if not same:
        a, b = _model_name(params_a), _model_name(params_b)
        what = f"{a} and {b}" if a != b else f"two different copies of {a} (their weight files differ)"
        raise UserError(f"These entries are of different models ({what}): a comparison needs two statistics "
                        "entries of the same model.")
    if shape_a is not None and shape_b is not None and tuple(shape_a) != tuple(shape_b):
        raise UserError(f"These entries have different shapes ({shape_a[0]} x {shape_a[1]} and {shape_b[0]} x "
                        f"{shape_b[1]} neurons): a comparison needs two entries of the same model.")


def param_differences(params_a: Mapping, params_b: Mapping) -> pd.DataFrame:
    """The calibration settings (the sidebar's) in which two entries differ: setting, A, B."""
    defaults = {f.name: f.default for f in fields(CalibrationFields)}  # an entry from before a field existed
    rows = []
    for name in STATS_PARAM_NAMES:
        a, b = params_a.get(name, defaults.get(name)), params_b.get(name, defaults.get(name))
        if a != b and str(a) != str(b):
            rows.append({"setting": name, "A": str(a), "B": str(b)})
    return pd.DataFrame(rows, columns=["setting", "A", "B"])


def _grid(frame, column) -> np.ndarray:
    values = np.asarray(frame[column], dtype=np.float64)
    layers = np.asarray(frame["layer"])
    n_layers = int(layers[-1]) + 1 if layers.size else 0
    return values.reshape(n_layers, -1)


def _check_rows(frame_a, frame_b) -> None:
    la, lb = np.asarray(frame_a["layer"]), np.asarray(frame_b["layer"])
    if la.shape != lb.shape or not (la == lb).all() or not (np.asarray(frame_a["neuron"]) ==
                                                             np.asarray(frame_b["neuron"])).all():
        raise UserError("the two entries do not list the same neurons: a comparison needs two entries of the "
                        "same model")


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's ρ of each row of a against the same row of b ([layers, width] -> [layers]): the Pearson
    correlation of average ranks (ties share their mean rank); NaN where a row is constant."""
    ra = pd.DataFrame(a.T).rank(method="average").to_numpy(dtype=np.float64).T
    rb = pd.DataFrame(b.T).rank(method="average").to_numpy(dtype=np.float64).T
    ra = ra - ra.mean(axis=1, keepdims=True)
    rb = rb - rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(axis=1) / np.where(den > 0, den, 1), np.nan)


def rank_correlations(frame_a, frame_b, alpha: float, beta: float, gamma: float) -> pd.DataFrame:
    """Per layer: Spearman ρ between the two entries of TF, of IDF and of the score |W|^α·TF^β·IDF^γ."""
    _check_rows(frame_a, frame_b)
    out = {"layer": np.arange(_grid(frame_a, "tf").shape[0])}
    for c in ("tf", "idf"):
        out[c] = spearman_rows(_grid(frame_a, c), _grid(frame_b, c))
    sa, sb = scoring.score(frame_a, alpha, beta, gamma), scoring.score(frame_b, alpha, beta, gamma)
    shape = _grid(frame_a, "tf").shape
    out["score"] = spearman_rows(sa.reshape(shape), sb.reshape(shape))
    return pd.DataFrame(out)


def prune_overlap(frame_a, frame_b, alpha: float, beta: float, gamma: float, sparsity: float) -> dict:
    """Jaccard |A ∩ B| / |A ∪ B| of the neurons each entry's score would prune at `sparsity`:
    {"per_layer": DataFrame(layer, jaccard, shared, pruned), "all_layers": of the per-layer cuts together,
    "global": with one threshold across all layers}."""
    _check_rows(frame_a, frame_b)
    sa, sb = scoring.score(frame_a, alpha, beta, gamma), scoring.score(frame_b, alpha, beta, gamma)
    layers = np.asarray(frame_a["layer"])
    per = scoring.overlap(sa, sb, sparsity, layers, per_layer=True)
    glob = scoring.overlap(sa, sb, sparsity, None, per_layer=False)
    a = scoring.lowest(sa, layers, sparsity, per_layer=True).reshape(_grid(frame_a, "tf").shape)
    b = scoring.lowest(sb, layers, sparsity, per_layer=True).reshape(a.shape)
    table = pd.DataFrame({"layer": np.arange(a.shape[0]), "jaccard": [per["per_layer"][i] for i in range(a.shape[0])],
                          "shared": (a & b).sum(axis=1), "pruned": a.sum(axis=1)})
    return {"per_layer": table, "all_layers": per["jaccard"], "global": glob["jaccard"],
            "global_shared": glob["shared"], "global_pruned": glob["pruned"]}


def chance_jaccard(sparsity: float) -> float:
    """The Jaccard overlap two unrelated rankings give, pruning a fraction s each: |A ∩ B| ≈ s²n, |A ∪ B| ≈
    (2s − s²)n, so s / (2 − s) (1/3 at 50 %)."""
    s = float(sparsity)
    return s / (2 - s) if s > 0 else 1.0


def role_transitions(frame_a, frame_b, quantile: float | None = 0.9, tf_threshold: float | None = None,
                     idf_threshold: float | None = None) -> tuple[pd.DataFrame, int]:
    """(5 × 5 counts: role in A (rows) -> role in B (columns), the Roles page's classes incl. dead, each
    entry with its own per-layer quantile thresholds — or the same global values; neurons whose role
    changes)."""
    _check_rows(frame_a, frame_b)
    kw = dict(quantile=quantile, dead_below=scoring.DEAD_BELOW)
    la, _ = scoring.roles(frame_a, tf_threshold, idf_threshold, **kw)
    lb, _ = scoring.roles(frame_b, tf_threshold, idf_threshold, **kw)
    idx = {r: i for i, r in enumerate(ROLE_ORDER)}
    ca = np.fromiter((idx[r] for r in la), dtype=np.int64, count=len(la))
    cb = np.fromiter((idx[r] for r in lb), dtype=np.int64, count=len(lb))
    table = np.zeros((len(ROLE_ORDER), len(ROLE_ORDER)), dtype=np.int64)
    np.add.at(table, (ca, cb), 1)
    frame = pd.DataFrame(table, index=pd.Index(ROLE_ORDER, name="A"), columns=pd.Index(ROLE_ORDER, name="B"))
    return frame, int((ca != cb).sum())


def paired_sample(frame_a, frame_b, column: str, max_points: int = SCATTER_MAX, seed: int = 0) -> pd.DataFrame:
    """(layer, neuron, a, b) of `column` for every neuron, or a fixed random sample of `max_points`."""
    _check_rows(frame_a, frame_b)
    n = len(frame_a)
    rows = np.arange(n) if n <= max_points else np.sort(
        np.random.default_rng(seed).choice(n, size=max_points, replace=False))
    return pd.DataFrame({"layer": np.asarray(frame_a["layer"])[rows], "neuron": np.asarray(frame_a["neuron"])[rows],
                         "a": np.asarray(frame_a[column], dtype=np.float64)[rows],
                         "b": np.asarray(frame_b[column], dtype=np.float64)[rows]})
