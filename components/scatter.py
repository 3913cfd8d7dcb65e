"""The Roles page's TF-vs-IDF scatter: every neuron, drawn by WebGL in the browser from the entry's arrays (sent
once per tab, shared with the explorer: components/browser.py). A click on a point reports that neuron.

    scatter(entry_key, created, arrays, n_layers, width, log=True, picked=(11, 1072), on_pick=callback)
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import streamlit as st

from components import browser

KEY = "roles_scatter"
_COMPONENT = st.components.v2.component("nr_scatter", js=browser.module("scatter.js"), css=browser.css("scatter.css"))


def scatter(entry_key: str, created: float, arrays: Mapping[str, np.ndarray], n_layers: int, width: int, *,
            log: bool, picked: tuple[int, int] | None, on_pick: Callable[[int, int], None], present: bool = False,
            key: str = KEY):
    def clicked() -> None:
        pick = (st.session_state.get(key) or {}).get("pick") or {}
        try:
            layer, neuron = int(pick["layer"]), int(pick["neuron"])
        except (KeyError, TypeError, ValueError):
            return
        if pick.get("entry") == entry_key and 0 <= layer < n_layers and 0 <= neuron < width:  # a browser's word
            on_pick(layer, neuron)

    data = {"entry": entry_key, "n_layers": int(n_layers), "width": int(width), "log": bool(log),
            "picked": list(picked) if picked is not None else None, "present": bool(present)}
    browser.with_once_data(data, entry_key, created, arrays)
    return _COMPONENT(key=key, data=data, default={"pick": None, "need": None}, width="stretch", height="content",
                      on_pick_change=clicked, on_need_change=lambda: browser.on_need(key))
