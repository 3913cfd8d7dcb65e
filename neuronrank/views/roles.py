"""What the Roles page shows, computed: the component interpretation matrix per layer and in all, the
critical share against chance, the pattern across layers in words, dead and first-position neurons, and one
neuron's top-activating contexts. numpy and pandas only. (The TF vs IDF scatter draws every neuron in the
browser: components/scatter.)
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd

from neuronrank.analysis import scoring
from neuronrank.views.entries import EntryData

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


def column_colours(values: pd.DataFrame) -> pd.DataFrame:
    """Heatmap colours, each column (role) on its own scale: 0 = its fewest, 1 = its most. One scale for all
    would be decided by prune-first (~80 % of every layer) and hide the pattern of a small class."""
    lo, hi = values.min(), values.max()
    return ((values - lo) / (hi - lo).where(hi > lo, 1.0)).fillna(0.0)


def layer_ranges(layers) -> str:
    """Layer numbers as ranges: [2, 3, 4, 7, 14, 15] -> "2–4, 7, 14–15"."""
    layers = sorted(int(x) for x in layers)
    out, start = [], None
    for i, x in enumerate(layers):
        if start is None:
            start = x
        if i + 1 == len(layers) or layers[i + 1] != x + 1:
            out.append(f"{start}" if start == x else f"{start}–{x}")
            start = None
    return ", ".join(out)


def pattern_notes(rt: RoleTables, quantile: float | None = None) -> list[str]:
    """One line per role whose count changes across layers — what the heatmap shows, in words: the layer with
    the most (with quantile thresholds, critical against chance: (1 - q)² of a layer), and the layers with none
    or the fewest. The most striking first: the longest run of layers a role is absent from; dead last."""
    notes = []
    for role in rt.counts.columns:
        c, pct = rt.counts[role], rt.percent[role]
        if c.max() == c.min():
            continue
        peak = int(c.idxmax())
        if role == scoring.DEAD:
            notes.append((1, 0, f"dead: {int(c.sum()):,} in all, most in layer {peak} ({int(c[peak]):,})"))
            continue
        text = f"most in layer {peak} ({int(c[peak]):,} neurons, {pct[peak]:.1f} % of the layer"
        if quantile is not None and role == "critical":
            text += f"; chance would give {100 * (1 - quantile) ** 2:.1f} %"
        text += ")"
        zeros = c.index[c == 0]
        if len(zeros):
            text += f"; none in layer{'s' if len(zeros) > 1 else ''} {layer_ranges(zeros)}"
        else:
            low = int(c.idxmin())
            text += f"; fewest in layer {low} ({int(c[low]):,})"
        run = longest = 0
        for x in c.to_numpy():
            run = run + 1 if x == 0 else 0
            longest = max(longest, run)
        notes.append((0, -longest - float(c.max()) / max(float(c.min()), 1.0) / 1e6, f"{role}: {text}"))
    return [t for *_, t in sorted(notes)]


def contexts_heading(contexts: list, n_active: int) -> str:
    """What the recorded contexts of a neuron are: its top activations — or, for a neuron never positive on
    them (a dead one: SiLU's negative tail), its least negative values."""
    if contexts and max(c.value for c in contexts) <= 0:
        never = "is never positive" if n_active == 0 else "is not positive on these windows"
        return (f"**Its least negative activations** — this neuron {never}, so these are the values closest to 0 "
                "(one per calibration window, ±12 tokens, the token marked)")
    return "**Top-activating contexts** (one per calibration window, ±12 tokens, firing token marked)"


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
