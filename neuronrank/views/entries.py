"""What the Statistics page and the sidebar show of the statistics cache: the entries table, which entry a
set of parameters names, an entry loaded for the pages, its per-layer summary. numpy and pandas only.

Frames are the stats table of `NeuronStats.to_frame()`: one row per neuron, layer-major, every layer the
same width; functions that work per layer reshape to [layers, width] instead of grouping.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from neuronrank.analysis import scoring
from neuronrank.config.requests import CalibrationFields


# the sidebar's parameters: the calibration fields but how the model is loaded; a cache entry matches them
# when its manifest agrees on all of these (an entry written before a field existed had its default)
STATS_PARAM_NAMES = tuple(f.name for f in fields(CalibrationFields) if f.name not in ("dtype", "device"))
_PARAM_DEFAULTS = {f.name: f.default for f in fields(CalibrationFields)}


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
    """`stats` is a NeuronStats (from `stats_cache.load_stats`)."""
    return EntryData(
        key=key, params=dict(params), meta=dict(stats.meta), frame=stats.to_frame(),
        n_layers=stats.n_layers, width=stats.width, top_vals=stats.top_vals, top_window=stats.top_window,
        top_pos=stats.top_pos, windows=stats.windows, first_window=int(stats.first_window),
    )


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
    """Everything that names an entry, in full (a caption, a tooltip, the Statistics page)."""
    p = entry.params
    return (f"{p.get('model')} · {p.get('calib')} · {p.get('nsamples')}×{p.get('seqlen')} · "
            f"{p.get('site')} · {entry.key[:8]}")


def entry_description(entry) -> str:
    """An entry in full, for beside a picker that shows its short label: every calibration setting, the key."""
    p = entry.params
    skip = int(p.get("skip_first") or 0)
    return (f"{p.get('model')} · {p.get('calib')} · {p.get('nsamples')}×{p.get('seqlen')} tokens · "
            f"site {p.get('site')} · seed {p.get('seed')}" + (f" · first {skip} positions skipped" if skip else "")
            + f" · {p.get('dtype')} · key {entry.key}")


def _short_name(text: str) -> str:
    """A model or text spec as a picker shows it: a path's last part (a local folder, a .gguf file, file:PATH),
    a hub id without its organisation."""
    text = str(text)
    prefix = "file:" if text.startswith("file:") else ""
    name = text[len(prefix):].rstrip("/\\")
    name = name.replace("\\", "/").rsplit("/", 1)[-1] or name
    return prefix + name


def _label_parts(entry) -> dict[str, str]:
    """The parts of an entry's short label, in reading order: model, text, windows, site, seed, skipped
    positions, dtype."""
    p = entry.params
    return {"model": _short_name(p.get("model")), "calib": _short_name(p.get("calib")),
            "windows": f"{p.get('nsamples')}×{p.get('seqlen')}", "site": str(p.get("site")),
            "seed": f"seed {p.get('seed')}", "skip_first": f"skip {int(p.get('skip_first') or 0)}",
            "dtype": str(p.get("dtype"))}


LABEL_PARTS = ("model", "calib", "windows", "site", "seed", "skip_first", "dtype")
LABEL_CONTEXT = ("model", "calib", "windows")  # said where they are the same for all, while the label stays short
LABEL_CHARS = 28  # what the sidebar's picker shows uncut (206 px) at 1440 px and at 1280 px / 150 %


def entry_labels(entries: Iterable) -> dict[str, str]:
    """Short labels for a picker of these entries (key -> label) that say what tells them apart.

    A narrow sidebar cut "smollm2-135m · news · 64×256 · gate · f9319df9" after the model, where every
    entry looked the same. Each label holds the parts that differ between the entries (model, text,
    windows, site, seed, skipped positions, dtype), and the model, text and windows where they are the same
    for all only as long as every label stays within LABEL_CHARS — what differs is never pushed out of
    sight (a lone entry reads "smollm2-135m · news · 64×256"). Entries alike in all of these (an edited text
    file) end with their key's first digits. The full description goes beside the picker
    (`entry_description`)."""
    entries = list(entries)
    parts = {e.key: _label_parts(e) for e in entries}
    differ = [n for n in LABEL_PARTS if len({parts[k][n] for k in parts}) > 1]

    def labels_of(names: list[str]) -> dict[str, str]:
        return {k: " · ".join(parts[k][n] for n in LABEL_PARTS if n in names) for k in parts}

    names = list(differ)
    for n in LABEL_CONTEXT:
        if n not in names and (not names or all(len(v) <= LABEL_CHARS for v in labels_of(names + [n]).values())):
            names.append(n)
    labels = labels_of(names)
    counts: dict[str, int] = {}
    for label in labels.values():
        counts[label] = counts.get(label, 0) + 1
    return {k: (f"{v} · {k[:8]}" if counts[v] > 1 else v) for k, v in labels.items()}


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
    """Tokens seen, neurons, dead neurons (scoring.dead_mask: active on fewer than 0.1 % of the tokens) and,
    among them, the never-active ones (n_active == 0), per layer."""
    layers = frame["layer"].to_numpy()
    n_active = _grid(frame["n_active"].to_numpy(), layers)
    tokens = _grid(frame["tokens"].to_numpy(), layers)[:, 0]
    return pd.DataFrame({
        "layer": np.arange(n_active.shape[0]), "tokens": tokens, "neurons": n_active.shape[1],
        "dead": scoring.dead_mask(n_active, tokens[:, None]).sum(axis=1),
        "never_active": (n_active == 0).sum(axis=1),
        "median_tf": np.median(_grid(frame["tf"].to_numpy(), layers), axis=1),
        "median_idf": np.median(_grid(frame["idf"].to_numpy(), layers), axis=1),
        "median_w_norm": np.median(_grid(frame["w_norm"].to_numpy(), layers), axis=1),
    })
