"""NeuronRank-OLD scores, the component interpretation matrix, and ranking overlap. numpy only.

score_i = |W_i|^α × TF_i^β × IDF_i^γ

- An exponent of 0 switches its factor off: the factor is exactly 1 (even where the base is 0).
- A zero base with a positive exponent gives 0 (a dead neuron scores 0, never NaN).
- Negative exponents are refused: they would rank dead neurons (TF = 0) as infinitely important,
  and the original method defines none. Exponents must be finite and at most MAX_EXPONENT.
"""

from __future__ import annotations

import numpy as np

from neuronrank.errors import UserError

MAX_EXPONENT = 10.0
ROLES = ("critical", "important", "moderate", "prune-first")  # (TF, IDF) = hh, hl, lh, ll
ROLE_TEXT = {
    "critical": "high TF, high IDF: specialised detector",
    "important": "high TF, low IDF: general feature, fires on most tokens",
    "moderate": "low TF, high IDF: rare pattern, small contribution",
    "prune-first": "low TF, low IDF: weak and unselective",
    "dead": "active (a > 0) on fewer than 0.1 % of the tokens: maximal IDF, yet TF need not be small",
}
DEAD = "dead"
# The one definition of a dead neuron (every page, the CLI, the ablate command): dead_mask.
DEAD_BELOW = 0.001  # active (a > 0) on fewer than 0.1 % of its layer's tokens
DEAD_RULE = "active (a > 0) on fewer than 0.1 % of its layer's calibration tokens"
DEAD_WHY = ("A dead neuron's IDF is maximal (it almost never fires), but its TF — the mean |a| over all tokens — "
            "need not be small: SiLU passes small negative values (down to −0.28; GELU to −0.17), so a gate that "
            "never fires still has |a| > 0 on almost every token.")


def _is_stats(obj) -> bool:
    """NeuronStats (not a frame: a stats frame has a `sum_abs` column, which pandas exposes as an attribute)."""
    return hasattr(obj, "to_frame") and hasattr(obj, "sum_abs")


def _components(stats):
    """(|W|, TF, IDF) as float64 arrays of the table's shape, from NeuronStats or a stats frame."""
    if _is_stats(stats):
        return stats.w_norm.ravel(), stats.tf.ravel(), stats.idf.ravel()
    return (np.asarray(stats["w_norm"], dtype=np.float64), np.asarray(stats["tf"], dtype=np.float64),
            np.asarray(stats["idf"], dtype=np.float64))


def check_exponent(name: str, value, field: str | None = None) -> float:
    """`value` as a float exponent, or one UserError naming it (`field`: the request field it came from)."""
    try:
        v = float(value)
    except (TypeError, ValueError) as e:
        raise UserError(f"{name} must be a number (got {value!r})", field=field) from e
    if not np.isfinite(v) or v < 0 or v > MAX_EXPONENT:
        raise UserError(f"{name} must be between 0 and {MAX_EXPONENT:g} (got {value!r})", field=field)
    return v


def _power(base: np.ndarray, exp: float) -> np.ndarray:
    if exp == 0.0:
        return np.ones_like(base)
    if exp == 1.0:
        return base
    return np.power(base, exp)


def score_components(w: np.ndarray, tf: np.ndarray, idf: np.ndarray, alpha=1.0, beta=1.0, gamma=1.0) -> np.ndarray:
    a, b, g = check_exponent("alpha", alpha), check_exponent("beta", beta), check_exponent("gamma", gamma)
    with np.errstate(over="ignore", under="ignore"):
        s = _power(np.asarray(w, np.float64), a) * _power(np.asarray(tf, np.float64), b)
        s *= _power(np.asarray(idf, np.float64), g)
    return s


def score(stats, alpha=1.0, beta=1.0, gamma=1.0) -> np.ndarray:
    """Scores aligned with `stats.to_frame()` rows (layer-major): a flat float64 array."""
    return score_components(*_components(stats), alpha, beta, gamma)


# ----------------------------------------------------------------------------------------------
# roles


def dead_mask(n_active, tokens, below: float = DEAD_BELOW) -> np.ndarray:
    """Dead neurons: active (a > 0) on fewer than a fraction `below` of their layer's tokens (DEAD_RULE).
    Never-active neurons (n_active == 0) are a subset."""
    return np.asarray(n_active) < float(below) * np.asarray(tokens)


def _layer_quantile(values: np.ndarray, layers: np.ndarray, q: float) -> np.ndarray:
    """Per-row threshold: the q-quantile of the row's own layer (q = 0.5: the median)."""
    out = np.empty_like(values, dtype=np.float64)
    for layer in np.unique(layers):
        m = layers == layer
        out[m] = np.quantile(values[m], q) if q != 0.5 else np.median(values[m])
    return out


def roles(stats, tf_threshold=None, idf_threshold=None, w_threshold=None, split_w: bool = False,
          quantile: float | None = None, dead_below: float | None = None):
    """The component interpretation matrix.

    Returns (labels, counts): labels[i] is the role of row i; counts is a DataFrame of counts per
    layer and role (plus an 'all' row). A neuron is "high" when strictly above the threshold.
    Thresholds default to the per-layer median — or, with `quantile` q, the per-layer q-quantile
    (0.9: "high" is the top 10 % of the layer); a number applies to every layer. With `split_w` (or a
    `w_threshold`) each role splits into "... / high |W|" and "... / low |W|". With `dead_below` f,
    neurons active (a > 0) on fewer than a fraction f of the tokens get the role "dead" whatever
    their TF and IDF (it needs n_active and tokens in `stats`).
    """
    import pandas as pd

    w, tf, idf = _components(stats)
    layers = np.asarray(stats["layer"]) if not _is_stats(stats) else \
        np.repeat(np.arange(stats.n_layers), stats.width)
    q = 0.5 if quantile is None else float(quantile)
    if not 0.0 < q < 1.0:
        raise UserError(f"the threshold quantile must be between 0 and 1 (got {quantile})")
    tf_t = _layer_quantile(tf, layers, q) if tf_threshold is None else float(tf_threshold)
    idf_t = _layer_quantile(idf, layers, q) if idf_threshold is None else float(idf_threshold)
    code = (~(tf > tf_t)).astype(np.int8) * 2 + (~(idf > idf_t)).astype(np.int8)  # 0=hh 1=hl 2=lh 3=ll
    names = list(ROLES)
    if split_w or w_threshold is not None:
        w_t = _layer_quantile(w, layers, q) if w_threshold is None else float(w_threshold)
        code = code * 2 + (~(w > w_t)).astype(np.int8)
        names = [f"{r} / {h} |W|" for r in ROLES for h in ("high", "low")]
    if dead_below is not None:
        if _is_stats(stats):
            active, tokens = stats.n_active.ravel(), np.repeat(stats.tokens, stats.width)
        else:
            active, tokens = np.asarray(stats["n_active"]), np.asarray(stats["tokens"])
        dead = dead_mask(active, tokens, dead_below)
        code = np.where(dead, len(names), code).astype(np.int8)
        names = names + [DEAD]
    labels = np.asarray(names, dtype=object)[code]
    n_layers = int(layers.max()) + 1 if layers.size else 0
    table = np.zeros((n_layers, len(names)), dtype=np.int64)
    np.add.at(table, (layers, code), 1)
    counts = pd.DataFrame(table, columns=names)
    counts.index.name = "layer"
    counts.loc["all"] = table.sum(axis=0)
    return labels, counts


# ----------------------------------------------------------------------------------------------
# which neurons a ranking would prune, and how two rankings agree


def lowest(scores: np.ndarray, layers: np.ndarray | None, sparsity: float, per_layer: bool = True) -> np.ndarray:
    """Boolean mask of the rows a ranking prunes: the lowest `sparsity` fraction, per layer or global.

    Ties are broken by row order (as a stable sort would), so the pruned count is exactly
    round(sparsity × n). O(n) per group (a partition, not a sort): 2.3M neurons take milliseconds.
    """
    if not 0.0 <= float(sparsity) < 1.0 or not np.isfinite(sparsity):
        raise UserError(f"sparsity must be in [0, 1) (got {sparsity!r})")
    scores = np.asarray(scores, dtype=np.float64)
    if not per_layer or layers is None:
        return _lowest_rows(scores[None, :], sparsity)[0]
    layers = np.asarray(layers)
    shape = _layer_grid(layers)
    if shape is not None:  # layer-major, equal widths: the stats table's own order
        return _lowest_rows(scores.reshape(shape), sparsity).ravel()
    mask = np.zeros(scores.shape, dtype=bool)
    for g in np.unique(layers):
        idx = np.flatnonzero(layers == g)
        mask[idx] = _lowest_rows(scores[idx][None, :], sparsity)[0]
    return mask


def _layer_grid(layers: np.ndarray) -> tuple[int, int] | None:
    """(layers, width) when rows are layer-major with equal widths (0,0,…,1,1,…), else None.
    A comparison, not np.unique: this runs on every slider move."""
    if layers.size == 0 or layers[0] != 0:
        return None
    n = int(layers[-1]) + 1
    if layers.size % n:
        return None
    grid = layers.reshape(n, -1)
    return grid.shape if (grid == np.arange(n)[:, None]).all() else None


def _lowest_rows(s: np.ndarray, sparsity: float) -> np.ndarray:
    """Per row of s: the k = round(sparsity × width) lowest entries, earliest first among ties."""
    k = int(round(sparsity * s.shape[1]))
    mask = np.zeros(s.shape, dtype=bool)
    if k == 0:
        return mask
    thr = np.partition(s, k - 1, axis=1)[:, k - 1:k]
    below = s < thr
    tied = s == thr
    need = k - below.sum(axis=1, keepdims=True)
    return below | (tied & (np.cumsum(tied, axis=1) <= need))


def overlap(scores_a: np.ndarray, scores_b: np.ndarray, sparsity: float, layers: np.ndarray | None = None,
            per_layer: bool = True) -> dict:
    """Jaccard overlap of the pruned sets of two rankings, overall and (with `layers`) per layer."""
    a = lowest(scores_a, layers, sparsity, per_layer)
    b = lowest(scores_b, layers, sparsity, per_layer)

    def jac(x, y):
        union = np.count_nonzero(x | y)
        return float(np.count_nonzero(x & y) / union) if union else 1.0

    out = {"jaccard": jac(a, b), "shared": int(np.count_nonzero(a & b)), "pruned": int(np.count_nonzero(a))}
    if layers is not None:
        layers = np.asarray(layers)
        shape = _layer_grid(layers)
        if shape is not None:  # vectorised over layers
            inter = (a & b).reshape(shape).sum(axis=1)
            union = (a | b).reshape(shape).sum(axis=1)
            vals = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
            out["per_layer"] = {g: float(v) for g, v in enumerate(vals)}
        else:
            out["per_layer"] = {int(g): jac(a[layers == g], b[layers == g]) for g in np.unique(layers)}
    return out
