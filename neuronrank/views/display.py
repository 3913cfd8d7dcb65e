"""Text the pages show that is not theirs — from the URL, the user or a stored run — shown as text, and the
URL's query parameters, each checked before anything uses it. No streamlit: the pages call these."""

from __future__ import annotations

import re

from neuronrank.config.methods import SPARSITY_TYPES
from neuronrank.config.requests import STUDY_NAME
from neuronrank.errors import UserError


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
# what the pages show, beyond the exponents: a word from a fixed set each
URL_CHOICES = {
    "overlap": ("per-layer", "global"),  # Exponents: pruned sets compared per layer or over the whole model
    "thresholds": ("quantile", "value"),  # Roles: per-layer quantile or one value for every layer
    "cells": ("counts", "percent"),  # Roles: what the heatmap's cells say
    "cmp_type": ("all", *SPARSITY_TYPES),  # Prune: the comparison chart by sparsity type
    "map_type": SPARSITY_TYPES,  # Exponents: the outcome map's sparsity type
}
# on/off controls, written 1/0 (read as True/False): the presentation mode, the Prune page's log axis;
# Exponents: log10 score axis; Roles: split every role by |W|, a class for dead neurons, log TF axis
URL_FLAGS = ("present", "cmp_log", "logx", "split", "dead", "logtf")
URL_QUANTILES = (0.5, 0.75, 0.8, 0.9, 0.95, 0.99)  # Roles: "high" = above this quantile of the layer
URL_THRESHOLDS = ("tf", "idf", "w")  # Roles: global threshold values (finite, >= 0)
URL_INDEX_MAX = 1_000_000  # a layer or neuron index; the page checks it against the entry's shape
_RUN_ID = re.compile(r"[0-9]{1,19}")
_ENTRY_KEY = re.compile(r"[0-9a-f]{16}")
_SWEEP = re.compile(r"sweep-[0-9a-f]{8}")
URL_RUN_LISTS = {"cmp_runs": 50}  # comma-separated run ids (at most this many)
_INDEX = re.compile(r"[0-9]{1,7}")
_NEURON = re.compile(r"([0-9]{1,7}):([0-9]{1,7})")
# Exponents: the outcome map's evaluation protocol, SOURCE@SEQLENxWINDOWS (the page accepts only one it offers)
_PROTOCOL = re.compile(r"([^@\x00-\x1f]{1,500})@([0-9]{1,6})x([0-9]{1,7})")


def _shown(raw: str, limit: int = 40) -> str:
    raw = str(raw)
    return raw if len(raw) <= limit else raw[:limit] + "…"


def url_value(name: str, raw: str):
    """The value of query parameter `name`, checked: a run id (`run`, `search_run`, the Roles page's
    `ablate_run`), a study name
    (`study`), a statistics entry key (`entry`, and the Compare page's `entry2`), an exponent or sparsity
    within its slider's range, a flag of URL_FLAGS (1/0 -> bool), a word of URL_CHOICES, a sweep (`sweep`),
    a list of run ids, a layer index (`layer`), a neuron `L:N` (-> (layer, neuron)), a quantile of
    URL_QUANTILES (`q`), a threshold value (`tf`, `idf`, `w`).
    Anything else raises UserError with a short notice (the raw text cut to 40 characters)."""
    text = str(raw).strip()
    if name in URL_FLAGS:
        if text in ("1", "0"):
            return text == "1"
        what = "1 or 0"
    elif name in URL_CHOICES:
        if text in URL_CHOICES[name]:
            return text
        choices = URL_CHOICES[name]
        what = " or ".join(choices) if len(choices) == 2 else "one of " + ", ".join(choices)
    elif name == "sweep":
        if _SWEEP.fullmatch(text):
            return text
        what = "a sweep id (sweep-xxxxxxxx)"
    elif name in URL_RUN_LISTS:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if len(parts) <= URL_RUN_LISTS[name] and all(_RUN_ID.fullmatch(p) and 1 <= int(p) <= RUN_ID_MAX
                                                    for p in parts):
            return sorted({int(p) for p in parts})
        what = f"a list of at most {URL_RUN_LISTS[name]} run ids"
    elif name in ("run", "search_run", "ablate_run"):
        if _RUN_ID.fullmatch(text) and 1 <= int(text) <= RUN_ID_MAX:
            return int(text)
        what = "a run id"
    elif name == "study":
        if STUDY_NAME.fullmatch(text):
            return text
        what = "a study name"
    elif name in ("entry", "entry2"):  # entry2: the Compare page's second entry
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
    elif name == "layer":
        if _INDEX.fullmatch(text) and int(text) <= URL_INDEX_MAX:
            return int(text)
        what = "a layer number"
    elif name == "neuron":
        m = _NEURON.fullmatch(text)
        if m and max(int(m[1]), int(m[2])) <= URL_INDEX_MAX:
            return int(m[1]), int(m[2])
        what = "a neuron written layer:neuron (e.g. 11:1072)"
    elif name == "map_eval":
        m = _PROTOCOL.fullmatch(text)
        if m:
            return m[1], int(m[2]), int(m[3])
        what = "an evaluation protocol written source@seqlenxwindows (e.g. wiki@512x16)"
    elif name == "q":
        try:
            value = float(text)
        except ValueError:
            value = None
        if value in URL_QUANTILES:
            return value
        what = "one of " + ", ".join(f"{q:g}" for q in URL_QUANTILES)
    elif name in URL_THRESHOLDS:
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is not None and 0.0 <= value < float("inf"):
            return value
        what = "a number of at least 0"
    else:
        raise KeyError(f"no query parameter {name!r}")
    raise UserError(f"The link's {name}={_shown(text)} is not {what}; it was ignored.")


def url_text(value) -> str:
    """A control's value as the URL writes it (url_value reads it back): 1/0, a number, a list of ids."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)
