"""The outcome map beside the Exponents sliders (drawn by components/outcome_map.js inside the explorer): what
Python gathers and fits for it, and "Measure this point".

    data, outcomes, posterior = outcome_data(entry_key, calib, sparsity, sparsity_type, protocol)
    measure(raw, entry_key, ...)       a browser's request, checked, queued as a real prune run

The points and the fit come from `neuronrank.views.outcomes`; the run store is re-read only when it changed
(its stamp), the studies only when their storage file changed, and the GP is fitted once per set of points
(cached by the points themselves). The posterior travels in the explorer's `data` and is re-sent only when it
changed (an identical `data` does not re-invoke the browser's code).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd
import streamlit as st

from neuronrank.config.methods import nm
from neuronrank.config.requests import PruneRequest
from neuronrank.data.inputs import check_inputs
from neuronrank.queue import jobs
from neuronrank.runs import store as run_store
from neuronrank.runs.store import RunStore
from neuronrank.views import outcomes as views

log = logging.getLogger(__name__)
PENDING = "_measure_runs"  # session state: the ids of runs this session queued with "measure this point"
QUEUED = "_measure_queued"  # session state: a run was queued in this run's callback (the page then reruns whole)
NOTE = "_measure_note"  # session state: what the last "measure this point" did (or why it did not)


@st.cache_resource(max_entries=2, show_spinner=False)
def _runs(path: str, stamp: tuple) -> list[dict]:
    """The prune runs of the store, re-read when its stamp moved; shared, read-only (a copy per rerun would cost
    more than the gathering: a prune run's result holds its per-module sparsities)."""
    return RunStore(Path(path)).list(kind="prune", limit=100_000)


def _study_file() -> Path:
    from neuronrank.data.paths import cache_dir

    return cache_dir() / "search" / "studies.sqlite"


@st.cache_resource(max_entries=2, show_spinner=False)
def _studies(path: str, stamp: tuple) -> tuple[list[dict], int]:
    if stamp[0] is None:  # no study storage yet: nothing searched
        return [], 0
    from neuronrank.search.outcomes import study_outcomes

    try:
        return study_outcomes()
    except Exception as e:  # noqa: BLE001 - a storage that cannot be read must not take the page down
        log.warning("studies left out of the outcome map: %s", e)
        return [], 1


@st.cache_resource(max_entries=16, show_spinner=False)
def _fit(key: tuple) -> views.Posterior | None:
    """The GP of exactly these points (a new point is a new key: fitted once, then shared by sessions)."""
    return views.fit(pd.DataFrame(list(key), columns=["alpha", "beta", "gamma", "ppl"]))


def records() -> tuple[list[dict], list[dict], int]:
    path = run_store.default_path()
    runs = _runs(str(path), run_store.stamp(path)) if path.exists() else []
    studies, left = _studies(str(_study_file()), run_store.stamp(_study_file()))
    return runs, studies, left


def protocol_choices(runs, studies, entry_key: str, calib: dict, wanted: views.Protocol) -> list[views.Protocol]:
    """The protocols measured on the entry (most measurements first), and `wanted` (the Prune page's) too."""
    counts = views.protocols(runs, studies, entry_key, calib)
    out = sorted(counts, key=lambda p: (-counts[p], p.label()))
    if wanted not in out:
        out.append(wanted)
    return out


def nm_mismatch(sparsity: float, sparsity_type: str) -> str | None:
    if ":" not in sparsity_type:
        return None
    n, m = nm(sparsity_type)
    if math.isclose(sparsity, n / m, abs_tol=1e-9):
        return None
    return f"{sparsity_type} prunes {n} of every {m} weights: set the sparsity slider to {n / m:.0%} to see its outcomes."


def outcome_data(runs, studies, entry_key: str, calib: dict, sparsity: float, sparsity_type: str,
                 protocol: views.Protocol, skipped_studies: int = 0):
    """(the browser's `outcomes`, Outcomes, Posterior or None)."""
    out = views.gather(runs, studies, entry_key, calib, sparsity, sparsity_type, protocol)
    out.skipped += skipped_studies
    post = _fit(views.points_key(out.points.tail(views.MAX_POINTS)))
    data = {"sparsity": float(sparsity), "type": sparsity_type, "protocol": protocol.label(),
            "min_points": views.MIN_POINTS, "points": views.browser_points(out), "posterior": None,
            "posterior_sig": None if post is None else post.sig}
    return data, out, post


SENT = "_outcome_posterior_sent"  # session state: the signature of the posterior this session's tab holds


def with_once_posterior(data: dict | None, post: views.Posterior | None) -> dict | None:
    """The posterior goes to the browser once per change: `posterior_sig` always, the posterior itself only when
    this session's tab does not hold that one (every rerun re-serialises what `data` holds: at 400 points the
    Cholesky factor alone is 160,000 numbers). A tab that lacks it asks (state `need` with `posterior`)."""
    if data is None or post is None:
        return data
    if st.session_state.get(SENT) != post.sig:
        data["posterior"] = post.browser()
        st.session_state[SENT] = post.sig
    return data


def on_need(component_key: str) -> None:
    """The browser lacks the posterior it was told about (a reload, a new instance): send it with the next run."""
    need = (st.session_state.get(component_key) or {}).get("need") or {}
    if need.get("posterior"):
        st.session_state.pop(SENT, None)


def checked_request(raw, entry_key: str) -> dict | None:
    """A "measure this point" from the browser (its word: checked), or None."""
    try:
        got = {k: float(raw[k]) for k in ("alpha", "beta", "gamma", "sparsity")}
    except (KeyError, TypeError, ValueError):
        return None
    if raw.get("entry") != entry_key or not all(math.isfinite(v) for v in got.values()):
        return None
    if not all(0.0 <= got[k] <= 3.0 for k in ("alpha", "beta", "gamma")) or not 0.0 <= got["sparsity"] <= 0.95:
        return None
    return {k: round(v, 3) for k, v in got.items()}


def measure(point: dict, calib: dict, entry_layers: int | None, sparsity_type: str, protocol: views.Protocol,
            posterior: views.Posterior | None, map_sparsity: float) -> None:
    """Queue the prune run at `point` (the Prune page's path: a validated request, confined paths, the queue),
    with the estimate the map showed recorded beside it (computed here from the same posterior)."""
    if not math.isclose(point["sparsity"], map_sparsity, abs_tol=1e-9):
        st.session_state[NOTE] = "The sparsity slider moved: measure again once the map shows it."
        return
    req = PruneRequest(**calib, prune_method=views.EXPONENT_METHOD, sparsity_ratio=point["sparsity"],
                       sparsity_type=sparsity_type, alpha=point["alpha"], beta=point["beta"], gamma=point["gamma"],
                       eval=protocol.source, eval_seqlen=protocol.seqlen, eval_windows=protocol.windows)
    from neuronrank import UserError
    from neuronrank.config.requests import app_message

    try:
        req.validate(entry_layers)
        check_inputs(req)
        est = None if posterior is None else posterior.estimate(point["alpha"], point["beta"], point["gamma"])
        run_id = jobs.submit("prune", req, meta={"estimate": est, "from": "outcome map"})
    except UserError as e:
        st.session_state[NOTE] = f"Not queued: {app_message(e)}"
        return
    st.session_state.setdefault(PENDING, []).append(run_id)
    st.session_state[QUEUED] = True
    st.session_state[NOTE] = (f"Run {run_id} queued at α = {point['alpha']:g}, β = {point['beta']:g}, "
                              f"γ = {point['gamma']:g}" + ("" if est is None else f" ({views.estimate_text(est)})"))
