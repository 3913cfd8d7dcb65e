"""What the app's pages show, computed: numpy and pandas only (no streamlit, no model).

Pages call these functions and draw the result; everything here is plain data in, plain data out,
so it is unit-tested without a browser and benchmarked in bench/app_latency.py.

Frames are the stats table of `NeuronStats.to_frame()`: one row per neuron, layer-major, every layer
the same width. Functions that work per layer rely on that order (they reshape to [layers, width]
or slice a layer's contiguous rows) instead of grouping, which is what keeps a slider move cheap.

Scores always come from `neuronrank.scoring.score`: this module bins, ranks and tabulates them, it
never computes a score of its own.
"""

from __future__ import annotations

import html
import re
import time
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from neuronrank import scoring
from neuronrank.errors import UserError

HIST_BINS = 100
SCATTER_MAX = 20_000
CONTEXT_RADIUS = 12
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

# the sidebar's parameters; a cache entry matches them when its manifest agrees on all of these
STATS_PARAM_NAMES = ("model", "calib", "nsamples", "seqlen", "seed", "site", "skip_first")
_PARAM_DEFAULTS = {"skip_first": 0}  # entries written before a parameter existed had its default


def stats_params_of(params: Mapping) -> dict:
    """The sidebar's statistics parameters out of a larger mapping (an entry's or a run's)."""
    return {k: params[k] for k in STATS_PARAM_NAMES if k in params}


# ----------------------------------------------------------------------------------------------
# loaded entries


@dataclass
class EntryData:
    """What the pages need of one cache entry, loaded once (and cached by the app per entry key)."""

    key: str
    params: dict
    meta: dict
    frame: pd.DataFrame
    n_layers: int
    width: int
    top_vals: np.ndarray  # [layers, neurons, k]
    top_window: np.ndarray  # [layers, neurons, k] global window index, -1 = padding
    top_pos: np.ndarray  # [layers, neurons, k]
    windows: np.ndarray | None  # [n_windows, seqlen] token ids
    first_window: int


def entry_data(key: str, stats, params: Mapping) -> EntryData:
    """`stats` is a NeuronStats (from `store.load_stats`)."""
    return EntryData(
        key=key, params=dict(params), meta=dict(stats.meta), frame=stats.to_frame(),
        n_layers=stats.n_layers, width=stats.width, top_vals=stats.top_vals, top_window=stats.top_window,
        top_pos=stats.top_pos, windows=stats.windows, first_window=int(stats.first_window),
    )


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


def layer_slice(layers: np.ndarray, layer: int) -> slice:
    """Rows of one layer (the frame is layer-major, so they are contiguous)."""
    lo, hi = np.searchsorted(layers, [layer, layer + 1])
    return slice(int(lo), int(hi))


def _grid(values: np.ndarray, layers: np.ndarray) -> np.ndarray:
    """Layer-major values -> [layers, width]."""
    values = np.asarray(values)
    n_layers = int(layers[-1]) + 1 if len(layers) else 0
    if n_layers == 0 or values.size % n_layers:
        raise ValueError("expected a layer-major table with equal layer widths")
    return values.reshape(n_layers, -1)


# ----------------------------------------------------------------------------------------------
# the cache table and the sidebar


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


def human_age(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    for limit, div, unit in ((60, 1, "s"), (3600, 60, "min"), (86400, 3600, "h")):
        if seconds < limit:
            return f"{seconds / div:.0f} {unit}"
    return f"{seconds / 86400:.0f} d"


def entry_label(entry) -> str:
    p = entry.params
    return (f"{p.get('model')} · {p.get('calib')} · {p.get('nsamples')}×{p.get('seqlen')} · "
            f"{p.get('site')} · {entry.key[:8]}")


def entries_table(entries: Iterable, now: float | None = None) -> pd.DataFrame:
    """One row per cache entry: what it was computed from, how big and how old it is."""
    now = time.time() if now is None else now
    rows = []
    for e in entries:
        p, shape = e.params, e.manifest.get("shape", [None, None])
        rows.append({
            "key": e.key, "model": p.get("model"), "calib": p.get("calib"), "site": p.get("site"),
            "nsamples": p.get("nsamples"), "seqlen": p.get("seqlen"), "seed": p.get("seed"),
            "dtype": p.get("dtype"), "topk": p.get("topk"), "layers": shape[0], "width": shape[1],
            "size": human_bytes(e.size_bytes), "size_bytes": e.size_bytes,
            "age": human_age(now - e.created),
            "created": pd.Timestamp(e.created, unit="s").floor("s"),
        })
    cols = ["key", "model", "calib", "site", "nsamples", "seqlen", "seed", "dtype", "topk", "layers", "width",
            "size", "size_bytes", "age", "created"]
    return pd.DataFrame(rows, columns=cols)


def matching_entries(entries: Iterable, params: Mapping) -> list[str]:
    """Keys of entries computed with these sidebar parameters (newest first, as given).

    Only the user-visible parameters are compared; the model and text fingerprints in the real cache
    key are not (computing them needs the files), so an edited file still matches its old entry.
    """
    want = {k: params.get(k, _PARAM_DEFAULTS.get(k)) for k in STATS_PARAM_NAMES}
    return [e.key for e in entries
            if all(_same(e.params.get(k, _PARAM_DEFAULTS.get(k)), v) for k, v in want.items())]


def _same(a, b) -> bool:
    return a == b or str(a) == str(b)


# ----------------------------------------------------------------------------------------------
# per-layer summaries (Statistics page)


def layer_quantiles(values: np.ndarray, layers: np.ndarray) -> pd.DataFrame:
    """Box-plot numbers per layer: quartiles, Tukey fences (1.5 IQR, clipped to the data), min, max.

    Plotly draws a box from these arrays alone, so the browser gets 8 numbers per layer instead of
    every neuron.
    """
    g = _grid(np.asarray(values, dtype=np.float64), layers)
    q1, med, q3 = np.quantile(g, [0.25, 0.5, 0.75], axis=1)
    iqr = q3 - q1
    lo_lim, hi_lim = (q1 - 1.5 * iqr)[:, None], (q3 + 1.5 * iqr)[:, None]
    lower = np.where(g >= lo_lim, g, np.inf).min(axis=1)  # the lowest datum inside the fence
    upper = np.where(g <= hi_lim, g, -np.inf).max(axis=1)
    return pd.DataFrame({
        "layer": np.arange(g.shape[0]), "min": g.min(axis=1), "lowerfence": lower, "q1": q1, "median": med,
        "q3": q3, "upperfence": upper, "max": g.max(axis=1), "mean": g.mean(axis=1),
    })


def layer_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Tokens seen, neurons and dead neurons (never active, n_active == 0) per layer."""
    layers = frame["layer"].to_numpy()
    n_active = _grid(frame["n_active"].to_numpy(), layers)
    tokens = _grid(frame["tokens"].to_numpy(), layers)[:, 0]
    return pd.DataFrame({
        "layer": np.arange(n_active.shape[0]), "tokens": tokens, "neurons": n_active.shape[1],
        "dead": (n_active == 0).sum(axis=1),
        "median_tf": np.median(_grid(frame["tf"].to_numpy(), layers), axis=1),
        "median_idf": np.median(_grid(frame["idf"].to_numpy(), layers), axis=1),
        "median_w_norm": np.median(_grid(frame["w_norm"].to_numpy(), layers), axis=1),
    })


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


# ----------------------------------------------------------------------------------------------
# roles (Roles page)


@dataclass
class RoleTables:
    labels: np.ndarray  # role of every row
    counts: pd.DataFrame  # [layers, roles]
    percent: pd.DataFrame  # [layers, roles], % of the layer's neurons
    overall: pd.DataFrame  # TF high/low × IDF high/low (× |W| high/low): neuron counts (dead ones apart)
    summary: pd.DataFrame  # one row per role: TF, IDF, |W|, neurons, %, meaning
    dead: int  # neurons in the "dead" class (0 without one)


def role_tables(frame, tf_threshold: float | None = None, idf_threshold: float | None = None,
                w_threshold: float | None = None, split_w: bool = False, quantile: float | None = None,
                dead_below: float | None = None) -> RoleTables:
    """`scoring.roles` (thresholds None = per-layer median, or per-layer `quantile`), arranged for a
    heatmap and a 2×2 table. With `dead_below`, (nearly) never-active neurons form their own class."""
    labels, counts = scoring.roles(frame, tf_threshold, idf_threshold, w_threshold if split_w else None, split_w,
                                   quantile=quantile, dead_below=dead_below)
    per_layer = counts.drop(index="all")
    per_layer.index = per_layer.index.astype(int)
    total = counts.loc["all"]
    sizes = per_layer.sum(axis=1).replace(0, 1)
    percent = per_layer.div(sizes, axis=0) * 100
    cells = [c for c in counts.columns if c != scoring.DEAD]
    split = len(cells) == 2 * len(scoring.ROLES)
    # scoring.ROLES is ordered (TF, IDF) = hh, hl, lh, ll; with the split each role is (high, low) |W|
    grid = np.asarray(total[cells], dtype=np.int64).reshape(2, 2, 2 if split else 1)  # [tf, idf, w]
    level = ("high", "low")
    columns = [f"IDF {i}" + (f", |W| {w}" if split else "") for i in level for w in (level if split else ("",))]
    overall = pd.DataFrame(grid.reshape(2, -1), index=[f"TF {t}" for t in level], columns=columns)
    rows = []
    n_all = max(int(total.sum()), 1)
    for c, name in enumerate(cells):
        base = name.split(" / ")[0]
        tf_level, idf_level = level[c // (4 if split else 2)], level[(c // (2 if split else 1)) % 2]
        rows.append({"role": name, "TF": tf_level, "IDF": idf_level,
                     **({"|W|": level[c % 2]} if split else {}),
                     "neurons": int(total[name]), "percent": 100 * int(total[name]) / n_all,
                     "meaning": scoring.ROLE_TEXT[base]})
    dead = int(total[scoring.DEAD]) if scoring.DEAD in total.index else 0
    if scoring.DEAD in total.index:
        rows.append({"role": scoring.DEAD, "TF": "–", "IDF": "–", **({"|W|": "–"} if split else {}),
                     "neurons": dead, "percent": 100 * dead / n_all, "meaning": scoring.ROLE_TEXT[scoring.DEAD]})
    return RoleTables(labels, per_layer, percent, overall, pd.DataFrame(rows), dead)


def first_position_only(data: "EntryData", arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """Row mask of neurons that fire only at the first position of a window (attention-sink neurons):
    active on at most one token per window, and every recorded top activation above 0 is at position 0."""
    if data.windows is None:
        return np.zeros(len(arrays["tf"]), dtype=bool)
    n_windows = len(data.windows)
    vals, pos = data.top_vals.reshape(-1, data.top_vals.shape[-1]), data.top_pos.reshape(-1, data.top_pos.shape[-1])
    fired = vals > 0
    only_first = fired.any(axis=1) & ~(fired & (pos != 0)).any(axis=1)
    return only_first & (arrays["n_active"] > 0) & (arrays["n_active"] <= n_windows)


def global_medians(arrays: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Whole-model medians: the starting values of the global thresholds."""
    return {c: float(np.median(arrays[c])) for c in ("tf", "idf", "w_norm")}


def scatter_sample(n: int, max_points: int = SCATTER_MAX, seed: int = 0) -> np.ndarray:
    """Sorted row indices: all rows, or a fixed random sample of `max_points` of them."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


# ----------------------------------------------------------------------------------------------
# top-activating contexts


@dataclass(frozen=True)
class ActivationContext:
    """One top activation of a neuron and the tokens around it."""

    value: float
    window: int  # global window index
    pos: int  # position of the firing token in the window
    ids: list[int]  # the tokens around it
    at: int  # index of the firing token in `ids`


def top_contexts(data: EntryData, layer: int, neuron: int, radius: int = CONTEXT_RADIUS) -> list[ActivationContext]:
    """The neuron's top activations (one per window, descending) with ±radius tokens of context."""
    if data.windows is None:
        return []
    out = []
    for v, w, p in zip(data.top_vals[layer, neuron], data.top_window[layer, neuron], data.top_pos[layer, neuron]):
        row = int(w) - data.first_window
        if w < 0 or not 0 <= row < len(data.windows) or not np.isfinite(v):
            continue  # padding (fewer windows than k) or a window outside this shard
        ids = data.windows[row]
        lo, hi = max(0, int(p) - radius), min(len(ids), int(p) + radius + 1)
        out.append(ActivationContext(float(v), int(w), int(p), [int(t) for t in ids[lo:hi]], int(p) - lo))
    return out


def context_html(tokenizer, ctx: ActivationContext) -> str:
    """The context as one line of HTML: every piece of text escaped (no markdown, so punctuation next
    to the firing token can never turn into literal asterisks), line breaks shown as ⏎, the firing
    token in a <mark> (a whitespace token made visible: ⏎ newline, ␣ space, ⇥ tab)."""
    def shown(text: str) -> str:
        return html.escape(text.replace("\r", "").replace("\n", "⏎"))

    before = tokenizer.decode(ctx.ids[:ctx.at])
    token = tokenizer.decode(ctx.ids[ctx.at:ctx.at + 1])
    after = tokenizer.decode(ctx.ids[ctx.at + 1:])
    visible = token if token.strip() else (token.replace(" ", "␣").replace("\t", "⇥") or "∅")
    return f"{shown(before)}<mark>{shown(visible)}</mark>{shown(after)}"


def ids_html(ctx: ActivationContext) -> str:
    """A context as token ids (when no tokenizer can be loaded), the firing one marked."""
    return " ".join(f"<mark>{t}</mark>" if i == ctx.at else str(t) for i, t in enumerate(ctx.ids))


def picked_neuron(point: Mapping, shown: np.ndarray, arrays: Mapping[str, np.ndarray]) -> tuple[int, int] | None:
    """(layer, neuron) of a point clicked in the TF-vs-IDF scatter.

    A browser sends a point's customdata as an object keyed "0", "1", ... (AppTest and older clients as
    a list); without customdata, its point_index into the plotted rows `shown` is used.
    """
    cd = point.get("customdata")
    if isinstance(cd, Mapping):
        cd = [cd[k] for k in sorted(cd, key=lambda k: int(k))] if all(str(k).isdigit() for k in cd) else None
    if isinstance(cd, (list, tuple)) and len(cd) >= 2:
        return int(cd[0]), int(cd[1])
    idx = point.get("point_index", point.get("pointIndex"))
    if idx is None or not 0 <= int(idx) < len(shown):
        return None
    row = int(shown[int(idx)])
    return int(arrays["layer"][row]), int(arrays["neuron"][row])


_TOKENS = re.compile(r"([\d,]+)/([\d,]+) tokens")


def stage_progress(message: str) -> tuple[str, str, float | None]:
    """A run's progress message "stage: detail" -> (stage, detail, the stage's own fraction or None).
    Stages that count tokens say "done/total tokens" in their detail."""
    stage, _, detail = message.partition(":")
    m = _TOKENS.search(detail)
    fraction = None
    if m:
        done, total = (int(x.replace(",", "")) for x in m.groups())
        fraction = min(1.0, done / total) if total else None
    return stage.strip(), detail.strip(), fraction


# The library's messages name CLI flags; the app's widgets have other names.
_APP_WORDS = [
    (re.compile(r"(\d+):(\d+) sparsity prunes (\d+) of every (\d+) weights: sparsity_ratio must be ([\d.]+) \(got [^)]*\)"),
     lambda m: f"{m[1]}:{m[2]} prunes {m[3]} of every {m[4]} weights: set the sparsity ratio to "
               f"{float(m[5]):.0%}"),
    (re.compile(r"sparsity_ratio must be in \[0, 1\) \(got ([^)]*)\)"),
     lambda m: f"The sparsity ratio must be at least 0 % and below 100 % (got {m[1]})"),
    (re.compile(r"pruning_last (\d+) exceeds the model's (\d+) layers"),
     lambda m: f"'Prune only the last N layers' is {m[1]}, but the model has {m[2]} layers"),
    (re.compile(r"pruning_last must be at least 1"), lambda m: "'Prune only the last N layers' must be at least 1"),
    (re.compile(r"--targets all"), lambda m: "Pruning attention too"),
    (re.compile(r"\beval_seqlen\b"), lambda m: "Eval seqlen"),
    (re.compile(r"\beval_windows\b"), lambda m: "Eval windows"),
    (re.compile(r"\bnsamples\b"), lambda m: "nsamples (calibration windows)"),
    (re.compile(r"\bsparsity_ratio\b"), lambda m: "sparsity ratio"),
]


def app_words(message: str) -> str:
    """A library message in the app's vocabulary (widget names instead of command-line flags)."""
    for pattern, repl in _APP_WORDS:
        message = pattern.sub(repl, message)
    return message


def critical_vs_chance(rt: RoleTables, quantile: float) -> pd.DataFrame:
    """Per layer: the % of neurons that are 'critical' (high TF and high IDF) against the % expected if
    TF and IDF were independent, (1 - q)². With per-layer quantile thresholds this is the one number
    a layer's matrix holds."""
    crit = [c for c in rt.percent.columns if c.split(" / ")[0] == "critical"]
    return pd.DataFrame({"layer": rt.percent.index.to_numpy(), "observed": rt.percent[crit].sum(axis=1).to_numpy(),
                         "expected": np.full(len(rt.percent), 100 * (1 - float(quantile)) ** 2)})


def dead_kept(arrays: Mapping[str, np.ndarray], scores: np.ndarray, sparsity: float) -> tuple[int, int, int]:
    """(dead neurons, never-active ones, dead ones a per-layer structured prune at `sparsity` keeps): where
    the score protects neurons that do nothing (their IDF is maximal)."""
    dead = scoring.dead_mask(arrays["n_active"], arrays["tokens"])
    pruned = scoring.lowest(scores, arrays["layer"], sparsity, per_layer=True)
    return int(dead.sum()), int((np.asarray(arrays["n_active"]) == 0).sum()), int((dead & ~pruned).sum())


def decade_ticks(log_values) -> list[float]:
    """Colour-bar ticks on a log10 scale: whole decades when the values span two or more, else 4 even steps."""
    finite = np.asarray(log_values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return []
    lo, hi = int(np.floor(finite.min())), int(np.ceil(finite.max()))
    if hi - lo >= 2:
        return [float(t) for t in range(lo, hi + 1)]
    return [float(t) for t in np.linspace(finite.min(), finite.max(), 4)]


# ----------------------------------------------------------------------------------------------
# text from the URL, the user or a stored run, shown in markdown elements


# every ASCII punctuation character that can start or shape markdown (CommonMark lets each be
# backslash-escaped); ' " , ; ? / % @ cannot, and stay readable
_MARKDOWN_PUNCT = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:&=^])")


# GitHub-style autolinks are found in the rendered text, after escapes are resolved (Streamlit links a bare
# https://x or www.x in a text node): an invisible WORD JOINER breaks each pattern — "://", "www.", "@"
_AUTOLINK = re.compile(r"(?<=:)(?=//)|(?<=www)(?=\.)|(?<=@)", re.IGNORECASE)
WORD_JOINER = "\u2060"


def plain(text) -> str:
    """`text` for a markdown element (st.error, st.caption, a label), so it shows as typed: backslash-
    escaped (never a link, an image the browser fetches, emphasis, HTML, LaTeX or a Streamlit colour
    directive), and bare URLs and addresses broken by an invisible WORD JOINER (never an autolink)."""
    return _MARKDOWN_PUNCT.sub(r"\\\1", _AUTOLINK.sub(WORD_JOINER, str(text)))


def code(text) -> str:
    """`text` as an inline code span (nothing inside is markdown), fenced by more backticks than it holds."""
    text = str(text).replace("\n", " ")
    runs = [len(r) for r in re.findall(r"`+", text)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


# ----------------------------------------------------------------------------------------------
# query parameters: each one is checked before anything uses it

RUN_ID_MAX = 2**63 - 1  # SQLite's INTEGER
URL_NUMBERS = {"alpha": (0.0, 3.0), "beta": (0.0, 3.0), "gamma": (0.0, 3.0), "sparsity": (0.0, 0.95)}
_RUN_ID = re.compile(r"[0-9]{1,19}")
_ENTRY_KEY = re.compile(r"[0-9a-f]{16}")


def _shown(raw: str, limit: int = 40) -> str:
    raw = str(raw)
    return raw if len(raw) <= limit else raw[:limit] + "…"


def url_value(name: str, raw: str):
    """The value of query parameter `name`, checked: a run id (`run`, `search_run`), a study name
    (`study`), a statistics entry key (`entry`), an exponent or sparsity within its slider's range.
    Anything else raises UserError with a short notice (the raw text cut to 40 characters)."""
    from neuronrank.requests import STUDY_NAME

    text = str(raw).strip()
    if name in ("run", "search_run"):
        if _RUN_ID.fullmatch(text) and 1 <= int(text) <= RUN_ID_MAX:
            return int(text)
        what = "a run id"
    elif name == "study":
        if STUDY_NAME.fullmatch(text):
            return text
        what = "a study name"
    elif name == "entry":
        if _ENTRY_KEY.fullmatch(text):
            return text
        what = "a statistics entry key"
    elif name in URL_NUMBERS:
        lo, hi = URL_NUMBERS[name]
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is not None and lo <= value <= hi:  # NaN fails both
            return round(value, 2)
        what = f"a number from {lo:g} to {hi:g}"
    else:
        raise KeyError(f"no query parameter {name!r}")
    raise UserError(f"The link's {name}={_shown(text)} is not {what}; it was ignored.")
