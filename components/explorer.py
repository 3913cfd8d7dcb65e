"""The Exponents explorer: sliders, score histograms, per-layer tables and overlaps, computed in the browser.

    view = explorer(entry_key, created, arrays, n_layers, width, view, on_view, present=...)

`view` = {alpha, beta, gamma, sparsity, layer, log, grouping}: what Python holds (session state, the URL). The
browser recomputes on every slider input (explorer_core.js: the library's rules, checked against
`neuronrank.views` by tests/e2e/test_explorer_numbers.py) and reports its view back once a drag or a burst of key
presses ends: `on_view(view)` runs as a callback, before the rerun. A view Python changed (a preset, the URL,
"Apply best") carries a new revision number; the browser applies only those, so a late echo of its own older
view never moves a slider back.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np
import streamlit as st

from components import browser, outcome_map

KEY = "explorer"
GROUPINGS = ("per layer", "globally")
LIMITS = {"alpha": (0.0, 3.0), "beta": (0.0, 3.0), "gamma": (0.0, 3.0), "sparsity": (0.0, 0.95)}
_COMPONENT = st.components.v2.component("nr_explorer", js=browser.module("explorer_core.js", "outcome_map.js",
                                                                         "explorer.js"),
                                        css=browser.css("explorer.css"))


def checked_view(raw, n_layers: int) -> dict | None:
    """A view the browser sent, checked (it is a browser's word): None if anything is off."""
    try:
        view = {k: float(raw[k]) for k in LIMITS}
        view.update(layer=int(raw["layer"]), log=bool(raw["log"]), grouping=str(raw["grouping"]))
    except (KeyError, TypeError, ValueError):
        return None
    if not all(math.isfinite(view[k]) and lo <= view[k] <= hi for k, (lo, hi) in LIMITS.items()):
        return None
    if not 0 <= view["layer"] < n_layers or view["grouping"] not in GROUPINGS:
        return None
    return {k: round(view[k], 3) for k in LIMITS} | {k: view[k] for k in ("layer", "log", "grouping")}


def explorer(entry_key: str, created: float, arrays: Mapping[str, np.ndarray], n_layers: int, width: int,
             view: dict, on_view: Callable[[dict], None], present: bool = False, key: str = KEY,
             outcomes: dict | None = None, on_measure: Callable[[dict], None] | None = None):
    """Mount the explorer (inside the page's fragment: a view heard reruns only the fragment). `outcomes`: the
    outcome map's data (components/outcome_map.py); `on_measure(raw)`: its "measure this point" (unchecked)."""
    known, rev = f"{key}__known", f"{key}__rev"
    if st.session_state.get(known) != (entry_key, view):  # Python changed the view: the browser must take it
        st.session_state[rev] = st.session_state.get(rev, 0) + 1
        st.session_state[known] = (entry_key, view)

    def heard() -> None:
        state = st.session_state.get(key) or {}
        raw = state.get("view") or {}
        got = checked_view(raw, n_layers)
        if got is None or raw.get("entry") != entry_key:
            return  # a view of another entry (switched meanwhile), or malformed
        st.session_state[known] = (entry_key, got)  # the browser has it: no new revision for it
        on_view(got)

    def measure() -> None:
        if on_measure is not None:
            on_measure((st.session_state.get(key) or {}).get("measure") or {})

    data = {"entry": entry_key, "n_layers": int(n_layers), "width": int(width), "view": view,
            "rev": st.session_state[rev], "present": bool(present), "outcomes": outcomes}
    browser.with_once_data(data, entry_key, created, arrays)
    return _COMPONENT(key=key, data=data, default={"view": None, "need": None, "measure": None}, width="stretch",
                      height="content", on_view_change=heard, on_need_change=lambda: (browser.on_need(key), outcome_map.on_need(key)),
                      on_measure_change=measure)
