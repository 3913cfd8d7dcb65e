"""What the Roles page shows, computed: the component interpretation matrix per layer and in all, the
critical share against chance, dead and first-position neurons, the TF vs IDF scatter sample, and one
neuron's top-activating contexts. numpy and pandas only.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd

from neuronrank.analysis import scoring
from neuronrank.views.entries import EntryData

SCATTER_MAX = 20_000
CONTEXT_RADIUS = 12


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


def first_position_only(data: EntryData, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
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
