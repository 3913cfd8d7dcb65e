"""Search: an Optuna study over (α, β, γ) run by a worker process (it survives reloads: the run and the
study are in the URL); its optimization history against the baselines, contour, slice and importance
plots; "apply best" sets the Exponents sliders; past studies reopen."""

from dataclasses import replace

import optuna.visualization as ov
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import ui
from neuronrank import UserError
from neuronrank.config.fields import spec
from neuronrank.config.requests import EXPONENT_LABELS, MAX_SEQLEN, OWL_LAMBDA, SearchRequest
from neuronrank.data.inputs import check_inputs
from neuronrank.queue import jobs
from neuronrank.search import study as search
from neuronrank.views.display import plain
from neuronrank.views.entries import human_age

ui.page_setup()
st.title("Search exponents")
st.caption("Which (α, β, γ) prune best — and do they beat Wanda? Each trial prunes with NeuronRank-OLD and "
           "measures perplexity; successive halving stops bad exponents after a part of the evaluation windows. "
           "Studies are kept in Optuna's storage; the CLI equivalent is `neuronrank search`.")
f = lambda name: spec(SearchRequest, name)  # noqa: E731  (defaults, bounds, choices, labels, help)
PARAMS = search.PARAMS
BASELINE_STYLE = {"dense": "gray", "wanda": "crimson", "magnitude": "darkorange", "random": "purple"}

base = SearchRequest(**ui.calibration()[0])

with st.form("search"):
    c1, c2, c3, c4 = st.columns(4)
    stype = c1.selectbox(f("sparsity_type").label, list(f("sparsity_type").choices), help=f("sparsity_type").help)
    ratio = c2.number_input(f("sparsity_ratio").label, 0.0, 0.95, 0.5, 0.05, help="2:4 needs 0.5, 4:8 needs 0.5")
    trials = c3.number_input(f("trials").label, 1, 1000, 12, help=f("trials").help)
    rungs = c4.number_input(f("rungs").label, 1, 8, f("rungs").default, help=f("rungs").help)
    cols = st.columns(3)
    ranges = {name: col.slider(f(f"{name}_range").label, 0.0, 10.0, (0.0, 3.0), 0.1, key=f"range_{name}")
              for col, name in zip(cols, PARAMS)}
    c1, c2 = st.columns(2)
    layer_sparsity = c1.selectbox(f("layer_sparsity").label, list(f("layer_sparsity").choices),
                                  format_func={"uniform": "uniform", "owl": "OWL (outlier-weighed)"}.get,
                                  help=f("layer_sparsity").help + " (unstructured)")
    lam = c2.slider(f("owl_lambda_range").label, 0.0, 0.3, (OWL_LAMBDA, OWL_LAMBDA), 0.01,
                    help="With OWL: one value fixes λ, a range searches it beside the exponents")
    c1, c2, c3, c4 = st.columns(4)
    eval_src = c1.text_input(f("eval").label, f("eval").default, help=f("eval").help)
    eval_seqlen = c2.number_input(f("eval_seqlen").label, f("eval_seqlen").lo, MAX_SEQLEN,
                                  f("eval_seqlen").default)
    eval_windows = c3.number_input(f("eval_windows").label, 0, 100_000, 16,
                                   help="W: the objective is the perplexity over W windows; trials report after "
                                        "W/4, W/2 and W (3 rungs)")
    study_in = c4.text_input("Study name (empty: derived from the settings)", "",
                             help="An existing study of the same settings is resumed up to the trial count")
    st.caption(f"Calibration (the loaded statistics entry): {plain(base.model)}, {plain(base.calib)}, "
               f"{base.nsamples} × {base.seqlen} tokens, seed {base.seed}, site {base.site}. "
               "One worker; the CLI's --workers runs more, one per GPU.")
    start = st.form_submit_button("Start search", type="primary")

if start:
    with ui.user_errors():
        req = replace(base, sparsity_type=stype, sparsity_ratio=float(ratio), trials=int(trials), rungs=int(rungs),
                      eval=eval_src.strip(), eval_seqlen=int(eval_seqlen), eval_windows=int(eval_windows),
                      study=study_in.strip() or None, layer_sparsity=layer_sparsity,
                      owl_lambda=float(lam[0]) if layer_sparsity == "owl" and lam[0] == lam[1] else None,
                      owl_lambda_range=tuple(map(float, lam)) if layer_sparsity == "owl" and lam[0] < lam[1] else None,
                      **{f"{n}_range": tuple(float(v) for v in ranges[n]) for n in PARAMS})
        req.validate()  # refuse bad input here, not in the worker
        check_inputs(req)
        req = replace(req, study=search.study_name(req))
        st.query_params["search_run"] = str(jobs.submit("search", req))
        st.query_params["study"] = req.study

with ui.user_errors():
    search.open_storage()  # a damaged study storage is moved aside here, and said once
notice = search.take_notice()
if notice:
    st.warning(plain(notice))


def _apply(best: dict, ratio: float | None) -> None:
    clipped = ui.apply_exponents(best["alpha"], best["beta"], best["gamma"], ratio)
    st.session_state["_search_applied"] = (best, clipped)


@st.cache_data(max_entries=16, show_spinner=False)
def figures(name: str, signature: tuple) -> dict[str, go.Figure]:
    """Optuna's plotly figures of a study; recomputed only when a trial changed (`signature`)."""
    study = search.load_study(name)
    baselines = study.user_attrs.get("baselines") or {}
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    out = {}
    fig = ov.plot_optimization_history(study, target_name="pruned perplexity")
    for label, b in baselines.items():
        if b.get("ppl") is not None:
            ui.reference_line(fig, b["ppl"], f"{label} {b['ppl']:.2f}", log=True,
                              color=BASELINE_STYLE.get(label, "black"), dash="dash", side="left")
    fig.update_layout(title="Optimization history (dashed: baselines at the same sparsity)",
                      yaxis_title="pruned perplexity", yaxis_type="log")
    out["history"] = fig
    if len(complete) >= 2:
        fig = ov.plot_contour(study, params=list(PARAMS), target_name="ppl")
        fig.update_layout(title="Contour of the pruned perplexity", height=650)
        out["contour"] = fig
        fig = ov.plot_slice(study, params=list(PARAMS), target_name="ppl")
        fig.update_layout(title="Slice: perplexity against each exponent")
        out["slice"] = fig
        try:
            fig = ov.plot_param_importances(study, target_name="ppl")
            fig.update_layout(title="Parameter importances")
            out["importance"] = fig
        except (RuntimeError, ValueError):  # too few distinct trials to say
            pass
    return out


def show_study(name: str, starting: bool) -> None:
    try:
        study = search.load_study(name)
    except search.NoStudy:
        if starting:  # the followed run is queued or running: its worker creates the study
            st.info(f"Study {plain(name)} has no trials yet: its worker is starting.")
        else:
            st.info(f"There is no study named {plain(name)} in the study storage.")
        return
    summary = search.summary(study)
    proto, ev = summary["protocol"] or {}, summary["evaluation"] or {}
    baselines, best = summary["baselines"] or {}, summary["best"]
    st.subheader(f"Study {plain(name)}")
    st.caption(f"{plain(proto.get('sparsity_type'))} sparsity {plain(proto.get('sparsity_ratio'))}, perplexity on "
               f"{plain(ev.get('source', proto.get('eval')))}, seqlen {ev.get('seqlen', proto.get('eval_seqlen'))}, "
               f"{ev.get('windows', proto.get('eval_windows'))} windows (halving after {ev.get('chunks')}); "
               f"{summary['trials']} trials finished, {summary['pruned']} stopped early, {summary['failed']} failed, "
               f"{summary['running']} running.")
    cols = st.columns(1 + len(baselines))
    if best:
        wanda = (baselines.get("wanda") or {}).get("ppl")
        cols[0].metric("Best NeuronRank-OLD", ui.fmt_ppl(best["ppl"]),
                       delta=None if wanda is None or best["ppl"] is None else f"{best['ppl'] - wanda:+.3f} vs wanda",
                       delta_color="inverse",
                       help=f"trial {best['trial']}: " + ", ".join(f"{k}={best[k]:.3f}" for k in PARAMS))
    for col, (label, b) in zip(cols[1:], baselines.items()):
        col.metric(f"{plain(label)} baseline", ui.fmt_ppl(b.get("ppl")))
    if best:
        st.write("Best exponents: " + ", ".join(f"{EXPONENT_LABELS[k]} = {best[k]:.3f}" for k in PARAMS))
        st.button("Apply best to the Exponents sliders", on_click=_apply, args=(best, proto.get("sparsity_ratio")),
                  key=f"apply_{name}")
        applied = st.session_state.pop("_search_applied", None)
        if applied:
            note = f" ({', '.join(applied[1])} clipped to the sliders' range)" if applied[1] else ""
            st.success("Exponents set" + note + ": open the Exponents or Prune & evaluate page.")
    trials = study.get_trials(deepcopy=False)
    signature = tuple((t.number, t.state.name, len(t.intermediate_values)) for t in trials)
    figs = figures(name, signature)
    ui.chart(figs["history"], f"search_history_{name}", key=f"hist_{name}")
    if "contour" in figs:
        ui.chart(figs["contour"], f"search_contour_{name}", key=f"contour_{name}")
        c1, c2 = st.columns([2, 1])
        with c1:
            ui.chart(figs["slice"], f"search_slice_{name}", key=f"slice_{name}")
        with c2:
            if "importance" in figs:
                ui.chart(figs["importance"], f"search_importance_{name}", key=f"imp_{name}")
    else:
        st.caption("Contour, slice and importance plots appear after two complete trials.")
    pt = summary["per_trial"]
    if pt:
        m = pt["median"]
        st.caption(f"Per trial (median): {m['total']:.2f} s, of which evaluation {m['eval']:.2f} s; overhead "
                   f"beyond evaluation {pt['overhead_with_between_median']:.2f} s (prune {m['prune']:.2f} s, "
                   f"restore {m['restore']:.3f} s).")
    ui.table(search.trials_frame(study), f"search_trials_{name}", hide_index=True)


def _study_running() -> bool:
    """The open study has running trials (workers started from the CLI, say): the page follows it too."""
    name = ui.url_param("study")
    if not name:
        return False
    try:
        with search.storage_errors():
            return any(t.state.name == "RUNNING" for t in search.load_study(name).get_trials(deepcopy=False))
    except UserError:
        return False


def _search_and_study(run: dict | None) -> None:
    """How the followed search run ended, and the open study (refreshed with the run)."""
    if run is not None and run["status"] == "failed":
        st.error(f"Search run {run['id']} failed: {plain(run['error'])}")
    elif run is not None and run["status"] == "cancelled":
        st.warning(f"Search run {run['id']} was stopped; the study keeps its finished trials.")
    elif run is not None and run["status"] == "done":
        st.success(f"Search run {run['id']} done in {run['result'].get('wall_seconds', 0):.0f} s.")
    name = ui.url_param("study")
    if name:
        with ui.user_errors(), search.storage_errors():  # a storage failing while read: a message
            show_study(name, starting=run is not None and run["status"] in ui.ACTIVE)


ui.follow_run("search", _search_and_study, param="search_run", stop="Stop search", busy=_study_running)

st.divider()
st.subheader("Past studies")
with ui.user_errors():
    past = pd.DataFrame(search.list_studies())
    if past.empty:
        st.info("No studies yet.")
    else:
        now = pd.Timestamp.now().timestamp()
        past.insert(len(past.columns) - 1, "age", past["created"].map(lambda t: human_age(now - t) if t else ""))
        past = past.drop(columns="created")
        picked = st.dataframe(past, hide_index=True, on_select="rerun", selection_mode="single-row",
                              key="past_studies")
        rows = picked.selection.rows if picked and picked.selection else []
        if rows and st.button(f"Open study {plain(past.iloc[rows[0]]['study'])}", key="open_study"):
            st.query_params["study"] = str(past.iloc[rows[0]]["study"])
            ui.forget_run("search", "search_run")  # the run followed so far is another study's
            st.rerun()
