"""What the browser components share: their module text, and the data a browser tab gets only once.

An entry's arrays (`neuronrank.views.explorer.browser_columns`: float64 columns, 32 bytes a neuron) travel as an
Arrow table inside the component's `data` dict — the browser receives an apache-arrow Table whose columns are
zero-copy Float64Arrays — and Plotly.js (the plotly package's own plotly.min.js, never the network) as text. Both
go in the first `data` of a session only: every rerun re-serialises whatever `data` holds (73 MB at 2.3M neurons),
so the session remembers what its tab has (`SENT`), and a component that lacks something sets its state `need`
(common.js) to be sent it again.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import numpy as np
import pyarrow as pa
import streamlit as st

from neuronrank.views import explorer as views

HERE = Path(__file__).resolve().parent
SENT = "_browser_sent"  # session state: {"plotly": bool, "entries": [keys, oldest first]} this tab holds
KEEP_ENTRIES = 2  # entries a tab keeps (common.js keeps as many)


def module(*names: str) -> str:
    """One ES module from JS files here: common.js first, then `names` in order (their `export`s dropped, but
    the last file's `export default`)."""
    parts = [(HERE / n).read_text() for n in ("common.js", *names)]
    return "\n".join(re.sub(r"^export (?!default)", "", p, flags=re.M) for p in parts)


def css(name: str) -> str:
    return (HERE / name).read_text()


@st.cache_resource(max_entries=KEEP_ENTRIES, show_spinner=False)
def arrow_table(key: str, created: float, _arrays: Mapping[str, np.ndarray]) -> pa.Table:
    """The entry's browser columns as one Arrow table (one chunk per column, shared read-only by sessions)."""
    return pa.table({k: pa.array(v) for k, v in views.browser_columns(_arrays).items()})


@st.cache_resource(show_spinner=False)
def plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def with_once_data(data: dict, entry_key: str, created: float, arrays: Mapping[str, np.ndarray]) -> dict:
    """`data` plus what this session's tab does not hold yet: the entry's arrays, Plotly.js."""
    sent = st.session_state.setdefault(SENT, {"plotly": False, "entries": []})
    if entry_key not in sent["entries"]:
        data["arrays"] = arrow_table(entry_key, created, arrays)
        sent["entries"] = [k for k in sent["entries"] if k != entry_key][-(KEEP_ENTRIES - 1):] + [entry_key]
    if not sent["plotly"]:
        data["plotly_js"] = plotly_js()
        sent["plotly"] = True
    return data


def on_need(component_key: str) -> None:
    """A component's `need` state changed: forget what its tab lacks, so the next run sends it again."""
    need = (st.session_state.get(component_key) or {}).get("need") or {}
    sent = st.session_state.setdefault(SENT, {"plotly": False, "entries": []})
    if need.get("arrays"):
        sent["entries"] = [k for k in sent["entries"] if k != need.get("entry")]
    if need.get("plotly"):
        sent["plotly"] = False
