"""Exponents: score = |W|^α × TF^β × IDF^γ, live. The explorer computes in the browser (components/explorer):
every slider input rescores the entry's neurons there; Python hears the view when a drag ends, keeps it in the
session (the Prune and Search pages read it) and in the URL."""

import streamlit as st

import ui
from components import outcome_map
from components.explorer import explorer
from neuronrank.analysis import scoring
from neuronrank.config.fields import spec
from neuronrank.config.methods import SPARSITY_TYPES
from neuronrank.config.requests import PruneRequest
from neuronrank.runs.store import RunStore
from neuronrank.views import explorer as views
from neuronrank.views import outcomes as outcome_views
from neuronrank.views.display import plain

ui.page_setup()
st.title("Exponents")
st.markdown("**score = |W|^α × TF^β × IDF^γ** — move an exponent and every neuron is rescored from the cached "
            "statistics, in your browser. An exponent of 0 switches its factor off.")
with st.expander("How a neuron ranking becomes a pruning mask"):
    st.markdown(
        "- **Structured**: the lowest-scoring neurons of each layer (the sparsity fraction) are removed whole — "
        "row *i* of `gate_proj` and `up_proj` and column *i* of `down_proj`.\n"
        "- **Unstructured** (the original NeuronRank-OLD): every weight W_jk of those rows and that column gets "
        "the metric |W_jk| × score_i; in each MLP matrix the lowest sparsity fraction of that metric is zeroed "
        "(one threshold per matrix). A low neuron score makes all of its weights cheap to remove; a high one "
        "protects even its small weights.\n"
        "- **Wanda** (the baseline) ranks weights by |W_jk| × ‖X_k‖₂ per output row; **magnitude** by |W_jk|.\n\n"
        "The histograms mark where the chosen sparsity cuts: neurons left of the red line are the ones a "
        "structured prune would remove. Equal scores are ranked by position (layer 0, neuron 0 first); the page "
        "says so when that decides part of the pruned set.")

entry, data = ui.require_entry()
arrays = ui.neuron_arrays(entry.key, entry.created)

# ----------------------------------------------------------------------------------------------
# the view: exponents and sparsity (shared with the other pages, ui.py), the layer, log x, the overlap grouping

ui.init_exponent_widgets()
st.session_state.setdefault("hist_layer", 0)
st.session_state.setdefault("hist_log", True)
st.session_state.setdefault("overlap_grouping", "per layer")
OVERLAP_URL = {"per layer": "per-layer", "globally": "global"}


def _from_url(name: str, value) -> str | None:
    if name == "layer":
        if value >= data.n_layers:
            return (f"The link's layer={value} is not in this entry ({data.n_layers} layers, 0–{data.n_layers - 1}); "
                    "it was ignored.")
        st.session_state["hist_layer"] = value
    elif name == "logx":
        st.session_state["hist_log"] = value
    elif name == "overlap":
        st.session_state["overlap_grouping"] = {v: k for k, v in OVERLAP_URL.items()}[value]
    elif name == "map_type":
        st.session_state["om_type"] = st.session_state["_om_type"] = value
    elif name == "map_eval":
        st.session_state["_om_protocol_url"] = value  # taken below if the entry was measured with it
    return None


ui.restore_page_url("exponents", ("layer", "logx", "overlap", "map_type", "map_eval"), _from_url)
if not 0 <= st.session_state["hist_layer"] < data.n_layers:  # chosen in an entry with more layers
    st.session_state["hist_layer"] = 0

with st.container(horizontal=True, gap="small"):  # wraps on a narrow screen instead of cutting labels
    for name, preset in views.PRESETS.items():
        a, b, g, sp = preset
        st.button(name, key=f"preset_{name}", on_click=ui.apply_preset, args=preset, help=(
            f"α = {a:g}, β = {b:g}, γ = {g:g}" + (f"; sparsity {sp:.0%}" if sp is not None else "")))


def _heard(view: dict) -> None:
    """The browser's view, when a drag ends (a callback: before the fragment reruns)."""
    st.session_state.update({f"_{k}": view[k] for k in ui.EXPONENT_DEFAULTS})
    st.session_state.update(hist_layer=view["layer"], hist_log=view["log"], overlap_grouping=view["grouping"])


def _view() -> dict:
    ss = st.session_state
    return {**{k: round(float(ss[f"_{k}"]), 3) for k in ui.EXPONENT_DEFAULTS},
            "layer": int(ss["hist_layer"]), "log": bool(ss["hist_log"]), "grouping": ss["overlap_grouping"]}


# ----------------------------------------------------------------------------------------------
# the outcome map beside the sliders: which measurements it shows (the sparsity follows the slider)

calib, entry_layers = ui.calibration()
_runs, _studies, _left = outcome_map.records()
_f = lambda name: spec(PruneRequest, name)  # noqa: E731
_ss = st.session_state
_wanted = outcome_views.Protocol(str(_ss.get("pr_eval", _f("eval").default)),
                                 int(_ss.get("pr_eval_seqlen", _f("eval_seqlen").default)),
                                 int(_ss.get("pr_eval_windows") or 16))  # the Prune page's (16: a CPU's default)
_protocols = outcome_map.protocol_choices(_runs, _studies, entry.key, calib, _wanted)
with st.container(horizontal=True, gap="small"):
    map_type = st.selectbox("Outcome map: sparsity type", list(SPARSITY_TYPES),
                            key=ui.persisted("om_type", _ss.get("pr_type", "unstructured")),
                            help="The measured runs, sweep cells and search trials shown beside the sliders are "
                                 "of this sparsity type, at the sparsity slider's value")
    ui.keep("om_type")
    _linked = _ss.pop("_om_protocol_url", None)
    if _linked is not None:
        _found = [p for p in _protocols if (p.source, p.seqlen, p.windows) == _linked]
        if _found:
            _ss["_om_protocol"] = _found[0]
        else:
            st.warning(plain(f"The link's outcome-map protocol ({_linked[0]}, seqlen {_linked[1]}, {_linked[2]} "
                             "windows) has no measurements on this entry; it was ignored."))
    if _ss.get("_om_protocol") not in _protocols:
        _ss["_om_protocol"] = _protocols[0]
    map_protocol = st.selectbox("Outcome map: evaluation", _protocols, key="_om_protocol",
                                format_func=outcome_views.Protocol.label,
                                help="Perplexities are comparable only under one protocol (text, seqlen, windows); "
                                     "the protocols this entry was measured with, most measurements first")


def _measure(raw, posterior, map_sparsity: float) -> None:
    """"Measure this point" (a callback, before the rerun): the same queue as the Prune page."""
    point = outcome_map.checked_request(raw, entry.key)
    if point is not None:
        outcome_map.measure(point, calib, entry_layers, map_type, map_protocol, posterior, map_sparsity)


@st.fragment(run_every=ui.POLL_SECONDS if st.session_state.get(outcome_map.PENDING) else None)
def measuring() -> None:
    """The runs "measure this point" queued, while they run; when the last ends the page reruns (the map shows
    the measured value beside its estimate)."""
    ids = st.session_state.get(outcome_map.PENDING) or []
    active = [r for r in RunStore().get_many(ids) if r["status"] in ui.ACTIVE]
    for r in active:
        ui.run_progress_bars(r)
    if ids and not active:
        st.session_state[outcome_map.PENDING] = []
        st.rerun(scope="app")


# A fragment: a view heard from the browser reruns only this part, not the page around it nor the sidebar.
@st.fragment
def explore() -> None:
    view = _view()
    runs, studies, left = outcome_map.records()
    notice = outcome_map.nm_mismatch(view["sparsity"], map_type)
    outcomes = posterior = None
    if notice:
        st.info(notice)
    else:
        outcomes, _, posterior = outcome_map.outcome_data(runs, studies, entry.key, calib, view["sparsity"], map_type,
                                                          map_protocol, left)
        outcomes = outcome_map.with_once_posterior(outcomes, posterior)
    note = st.session_state.pop(outcome_map.NOTE, None)
    if note:
        st.info(note)
    explorer(entry.key, entry.created, arrays, data.n_layers, data.width, view, _heard,
             present=ui.presentation_mode(), outcomes=outcomes,
             on_measure=lambda raw: _measure(raw, posterior, view["sparsity"]))
    if st.session_state.pop(outcome_map.QUEUED, False):  # a run was just queued: the whole page follows it
        st.rerun(scope="app")
    ui.keep_exponents()  # alpha/beta/gamma/sparsity for the other pages, and the URL
    ui.write_page_url({"layer": str(view["layer"]), "logx": "1" if view["log"] else "0",
                       "overlap": OVERLAP_URL[view["grouping"]], "map_type": map_type,
                       "map_eval": f"{map_protocol.source}@{map_protocol.seqlen}x{map_protocol.windows}"})
    _downloads(view)


def _downloads(view: dict) -> None:
    """The numbers the browser shows, as CSV files from the library (computed when a button is clicked)."""
    def scores():
        return scoring.score(arrays, view["alpha"], view["beta"], view["gamma"])

    def overlap_csv() -> str:
        _, per_layer = views.ranking_overlap(scores(), arrays, view["sparsity"],
                                             per_layer=view["grouping"] == "per layer")
        return per_layer.rename(columns={k: f"jaccard_{k}" for k in views.BASELINES}).to_csv(index=False)

    def lowest_csv() -> str:
        return views.lowest_neurons(arrays, scores()).to_csv(index=False)

    def fraction_csv() -> str:
        return views.pruned_fraction(scores(), arrays["layer"], view["sparsity"]).to_csv(index=False)

    tag = f"a{view['alpha']:g}_b{view['beta']:g}_g{view['gamma']:g}_s{view['sparsity']:g}"
    with st.container(horizontal=True, gap="small"):
        for label, fn, name in (("Download CSV: pruned fraction per layer", fraction_csv, "pruned_fraction"),
                                ("Download CSV: overlap per layer", overlap_csv, "overlap_per_layer"),
                                (f"Download CSV: the {views.LOWEST_N} lowest neurons", lowest_csv, "lowest_neurons")):
            st.download_button(label, fn, file_name=f"{name}_{tag}.csv", mime="text/csv", on_click="ignore",
                               key=f"csv_{name}")


measuring()
explore()
