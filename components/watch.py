"""The run watcher of the Prune and Search pages: the browser tab looks for a change, the server does nothing.

    changed = watch(stamp_file, stamp, every_s, key=...)   # inside a fragment: a change reruns only the fragment

The run store replaces a small stamp file whenever runs are created, claimed or finished
(`neuronrank.runs.store.activity_file`, alone in its folder). That folder is served as a (v1) component's file
folder — Streamlit's own static route for component files: a GET is a file read, no script run — and a timer in the
tab (watch.js) fetches the stamp every `every_s` seconds and fires the trigger `changed` only when it differs from
the value Python drew the page with. An idle page therefore costs the server one tiny GET per look instead of a
fragment rerun. The folder holds nothing but the stamp (a time and a pid), so serving it shows nothing else.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
import streamlit.components.v1 as components_v1

from components import browser

_COMPONENT = st.components.v2.component("nr_watch", js=browser.module("watch.js"))
_SERVED: dict[str, str] = {}  # stamp folder -> the URL path of its stamp (one registration per folder and process)


def stamp_url(stamp_file: Path) -> str | None:
    """The URL path the tab fetches `stamp_file` from (its folder registered as a component's file folder), or None
    when the folder cannot be made (a read-only cache)."""
    folder = str(Path(stamp_file).parent.resolve())
    if folder not in _SERVED:
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        served = components_v1.declare_component(f"runs_activity_{len(_SERVED)}", path=folder)
        base = (st.get_option("server.baseUrlPath") or "").strip("/")
        _SERVED[folder] = ("/" + base if base else "") + f"/component/{served.name}/{Path(stamp_file).name}"
    return _SERVED[folder]


def watch(stamp_file: Path, stamp: str, every_s: float, key: str) -> str | None:
    """Mount the watcher; returns the stamp the tab saw change (the trigger's value in this run) or None. None also
    when the stamp cannot be served: the caller then polls in Python."""
    url = stamp_url(stamp_file)
    if url is None:
        return None
    data = {"url": url, "stamp": stamp, "every_ms": int(every_s * 1000)}
    result = _COMPONENT(key=key, data=data, default={}, height=0, on_changed_change=lambda: None)
    return getattr(result, "changed", None)
