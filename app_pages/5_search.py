"""Search: an Optuna study over (α, β, γ) run by a worker process (it survives reloads: the run and the
study are in the URL); its optimization history against the baselines, contour, slice and importance
plots; "apply best" sets the Exponents sliders; past studies reopen; how long a study will take."""

from dataclasses import replace

import optuna.visualization as ov
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import ui
from neuronrank import UserError
from neuronrank.config.fields import spec
from neuronrank.config.requests import EXPONENT_LABELS, MAX_SEQLEN, OWL_LAMBDA, SearchRequest, from_params
from neuronrank.data.inputs import check_inputs
from neuronrank.queue import jobs
from neuronrank.runs.store import RunStore
from neuronrank.search import study as search
from neuronrank.views import charts, studies
from neuronrank.views.display import plain
from neuronrank.views.entries import human_age

ui.page_setup()
st.title("Search exponents")
st.caption("Which (α, β, γ) prune best — and do they beat Wanda? Each trial prunes with NeuronRank-OLD and "
           "measures perplexity; successive halving stops bad exponents after a part of the evaluation windows. "
           "Studies are kept in Optuna's storage; the CLI equivalent is `neuronrank search`.")
f = lambda name: spec(SearchRequest, name)  # noqa: E731  (defaults, bounds, choices, labels, help)
PARAMS = search.PARAMS
BASELINES = ("dense", "wanda", "magnitude", "random")
base = SearchRequest(**ui.calibration()[0])
store = RunStore()


def run_request(run: dict) -> SearchRequest | None:
    try:
        return from_params("search", run["params"])
    except (UserError, TypeError):
        return None


def run_study(run: dict) -> str | None:
    req = run_request(run)
    return None if req is None else search.study_name(req)


# a page opened beside a study started elsewhere (another tab, the command line) follows it
if ui.url_param("study") is None and ui.url_param("search_run") is None and not st.session_state.get("search_run"):
    active = [r for r in store.list(kind="search", limit=20) if r["status"] in ui.ACTIVE]
    if active and run_study(active[0]):
        st.query_params["search_run"] = str(active[0]["id"])
        st.query_params["study"] = run_study(active[0])

@st.cache_data(ttl=30, show_spinner=False)
def _past(model: str, sparsity_type: str, seqlen: int) -> tuple[list[dict], str | None]:
    """Measured trials of earlier studies of this model, type and seqlen (re-read at most every 30 s)."""
    return search.past_samples({"model": model, "sparsity_type": sparsity_type, "eval_seqlen": seqlen})


# ----------------------------------------------------------------------------------------------
# the form: plain widgets (the estimate below follows them), showing the open study's settings

FORM = {  # widget name -> (request field, default)
    "srch_type": ("sparsity_type", f("sparsity_type").default), "srch_ratio": ("sparsity_ratio", 0.5),
    "srch_trials": ("trials", 12), "srch_rungs": ("rungs", f("rungs").default),
    "range_alpha": ("alpha_range", (0.0, 3.0)), "range_beta": ("beta_range", (0.0, 3.0)),
    "range_gamma": ("gamma_range", (0.0, 3.0)), "srch_eval": ("eval", f("eval").default),
    "srch_seqlen": ("eval_seqlen", f("eval_seqlen").default), "srch_windows": ("eval_windows", 16),
    "srch_study": ("study", ""), "srch_layers": ("layer_sparsity", "uniform"),
    "srch_lambda": ("owl_lambda_range", (OWL_LAMBDA, OWL_LAMBDA)),
}


def form_from(req: SearchRequest, trials: int | None) -> None:
    """The form shows a followed study's settings (after a reload it showed the defaults beside a study
    run with other settings)."""
    for key, (field, default) in FORM.items():
        v = getattr(req, field)
        if field == "owl_lambda_range":  # a range searches λ, one value fixes it
            lam = req.owl_lambda if req.owl_lambda is not None else OWL_LAMBDA
            v = tuple(float(x) for x in v) if v else (float(lam), float(lam))
        elif field.endswith("_range"):
            v = tuple(float(x) for x in req.range(field[:-len("_range")]))
        elif field == "trials":
            v = int(trials or v)
        elif field == "sparsity_ratio":
            v = float(v)
        elif v is None:
            v = default
        st.session_state[key] = st.session_state[f"_{key}"] = v


def _study_of_followed_run() -> None:
    """A link with the run but not its study (Start writes the run id, then the study name: a reload between
    the two, or a link copied then, has only `search_run`) opens the run's study — its settings fill the form."""
    if ui.url_param("study") is not None:
        return
    followed = ui.url_param("search_run")
    if followed is None:
        return
    try:
        run = store.get(int(followed))
    except UserError:
        return  # the run follower says that it does not exist
    name = run_study(run) if run["kind"] == "search" else None
    if name:
        st.query_params["study"] = name


_study_of_followed_run()
open_name = ui.url_param("study")
if open_name and st.session_state.get("_form_study") != open_name:
    st.session_state["_form_study"] = open_name
    with ui.user_errors(), search.storage_errors():
        try:
            shown_req = search.stored_request(search.load_study(open_name))
        except search.NoStudy:  # queued: its worker has not created it yet — the run has the settings
            followed = ui.url_param("search_run")
            shown_req = None
            if followed is not None:
                try:
                    shown_req = run_request(store.get(followed))
                except UserError:
                    pass
        if shown_req is not None:
            target = None
            followed = ui.url_param("search_run")
            if followed is not None:
                try:
                    target = (store.get(followed)["params"] or {}).get("trials")
                except UserError:
                    pass
            form_from(replace(shown_req, study=open_name), target)

with st.container(border=True):
    row = ui.form_row()  # rows that wrap: four columns cut "unstructured" at 1280 px / 150 %
    stype = row.selectbox(f("sparsity_type").label, list(f("sparsity_type").choices), help=f("sparsity_type").help,
                          key=ui.persisted("srch_type", FORM["srch_type"][1]), width=ui.FIELD_PX)
    ui.keep("srch_type")
    ratio = row.number_input(f("sparsity_ratio").label, 0.0, 0.95, step=0.05, help="2:4 needs 0.5, 4:8 needs 0.5",
                             key=ui.persisted("srch_ratio", FORM["srch_ratio"][1]), width=ui.FIELD_PX)
    ui.keep("srch_ratio")
    trials = row.number_input(f("trials").label, 1, 1000, help=f("trials").help,
                              key=ui.persisted("srch_trials", FORM["srch_trials"][1]), width=ui.FIELD_PX)
    ui.keep("srch_trials")
    rungs = row.number_input(f("rungs").label, 1, 8, help=f("rungs").help,
                             key=ui.persisted("srch_rungs", FORM["srch_rungs"][1]), width=ui.FIELD_PX)
    ui.keep("srch_rungs")
    row = ui.form_row()
    ranges = {}
    for name in PARAMS:
        ranges[name] = row.slider(f(f"{name}_range").label, 0.0, 10.0, step=0.1,
                                  key=ui.persisted(f"range_{name}", FORM[f"range_{name}"][1]), width=ui.FIELD_PX)
        ui.keep(f"range_{name}")
    row = ui.form_row()
    layer_sparsity = row.selectbox(f("layer_sparsity").label, list(f("layer_sparsity").choices),
                                   format_func={"uniform": "uniform", "owl": "OWL"}.get,
                                   help=f("layer_sparsity").help + " (unstructured)",
                                   key=ui.persisted("srch_layers", FORM["srch_layers"][1]), width=ui.FIELD_PX)
    ui.keep("srch_layers")
    lam = row.slider(f("owl_lambda_range").label, 0.0, 0.3, step=0.01,
                     help="With OWL: one value fixes λ, a range searches it beside the exponents",
                     key=ui.persisted("srch_lambda", FORM["srch_lambda"][1]), width=ui.FIELD_PX)
    ui.keep("srch_lambda")
    row = ui.form_row()
    eval_src = row.text_input(f("eval").label, help=f("eval").help, key=ui.persisted("srch_eval", FORM["srch_eval"][1]),
                              width=ui.FIELD_PX)
    ui.keep("srch_eval")
    eval_seqlen = row.number_input(f("eval_seqlen").label, f("eval_seqlen").lo, MAX_SEQLEN,
                                   key=ui.persisted("srch_seqlen", FORM["srch_seqlen"][1]), width=ui.FIELD_PX)
    ui.keep("srch_seqlen")
    eval_windows = row.number_input(f("eval_windows").label, 0, 100_000,
                                    help="W: the objective is the perplexity over W windows; trials report after "
                                         "W/4, W/2 and W (3 rungs)",
                                    key=ui.persisted("srch_windows", FORM["srch_windows"][1]), width=ui.FIELD_PX)
    ui.keep("srch_windows")
    study_in = row.text_input("Study name (empty: derived from the settings)",
                              help="An existing study of the same settings is resumed up to the trial count",
                              key=ui.persisted("srch_study", ""), width=ui.FIELD_PX)
    ui.keep("srch_study")
    st.caption(f"Calibration (the loaded statistics entry): {plain(base.model)}, {plain(base.calib)}, "
               f"{base.nsamples} × {base.seqlen} tokens, seed {base.seed}, site {base.site}. "
               "One worker; the CLI's --workers runs more, one per GPU.")

    def form_request() -> SearchRequest:
        return replace(base, sparsity_type=stype, sparsity_ratio=float(ratio), trials=int(trials), rungs=int(rungs),
                       eval=eval_src.strip(), eval_seqlen=int(eval_seqlen), eval_windows=int(eval_windows),
                       study=study_in.strip() or None, layer_sparsity=layer_sparsity,
                       owl_lambda=float(lam[0]) if layer_sparsity == "owl" and lam[0] == lam[1] else None,
                       owl_lambda_range=tuple(map(float, lam)) if layer_sparsity == "owl" and lam[0] < lam[1] else None,
                       **{f"{n}_range": tuple(float(v) for v in ranges[n]) for n in PARAMS})

    def before_estimate(req: SearchRequest) -> str:
        """How long this study would take: measured trials of earlier studies of the same model, type and
        seqlen, else this model's prune runs at that seqlen."""
        windows = int(req.eval_windows or 16)
        chunks = search.chunk_sizes(req.rungs, windows)
        try:
            samples, name = _past(req.model, req.sparsity_type, req.eval_seqlen)
        except UserError:
            samples, name = [], None
        r = studies.rates(samples, f"at the rates measured in study {name}") if samples else None
        runs = store.list(kind="prune", limit=500)
        if r is None:
            r = studies.rates(studies.run_samples(runs, req.model, req.eval_seqlen),
                              f"at the rates of this model's prune runs at seqlen {req.eval_seqlen}")
        e = studies.search_estimate(req.trials, windows, chunks, r, baselines_left=len(BASELINES),
                                    setup=studies.loading_seconds(runs, req.model))
        return (f"Estimated time for {req.trials} trials of {windows} windows, with loading and the "
                f"{len(BASELINES)} baselines: {studies.estimate_text(e)}; the low end assumes halving stops half "
                "the trials at each rung.")

    st.caption(plain(before_estimate(form_request())))
    start = st.button("Start search", type="primary")

if start:
    with ui.user_errors():
        req = form_request()
        req.validate()  # refuse bad input here, not in the worker
        check_inputs(req)
        req = replace(req, study=search.study_name(req))
        st.query_params["search_run"] = str(jobs.submit("search", req))
        st.query_params["study"] = req.study
        st.session_state["_form_study"] = req.study

with ui.user_errors():
    search.open_storage()  # a damaged study storage is moved aside here, and said once
notice = search.take_notice()
if notice:
    st.warning(plain(notice))


def _apply(best: dict, ratio: float | None) -> None:
    clipped = ui.apply_exponents(best["alpha"], best["beta"], best["gamma"], ratio)
    st.session_state["_search_applied"] = (best, clipped)


# ----------------------------------------------------------------------------------------------
# the study's plots


def history_figure(trials: pd.DataFrame, baselines: dict) -> tuple[go.Figure, list[str]]:
    """Trials in order (complete: filled; stopped early by halving: open, at the ppl where they stopped),
    the best so far, the baselines as lines; y fitted to the trials and the baselines that are near them
    (random's millions are listed, not drawn: they pushed everything into the bottom tenth)."""
    pts = studies.history_points(trials)
    big = ui.presentation_mode()
    nr = charts.method_color("neuronrank_old")
    fig = go.Figure()
    comp, stopped, best = pts["complete"], pts["stopped"], pts["best"]
    base_vals = {k: (b or {}).get("ppl") for k, b in baselines.items()}
    values = list(comp["ppl"]) + list(stopped["ppl"])
    yr = charts.robust_range(values + [v for v in base_vals.values() if v is not None])
    drawn = [float(v) for v in values if yr.lo <= float(v) <= yr.hi]
    edge_y = yr.hi / 10 ** (0.03 * (yr.log_range()[1] - yr.log_range()[0]))
    off_scale = []
    if len(comp):
        inside = comp[comp["ppl"].astype(float) <= yr.hi]
        fig.add_trace(go.Scatter(x=inside["trial"].tolist(), y=inside["ppl"].tolist(), mode="markers",
                                 name="complete trial", marker=dict(color=nr, size=13 if big else 11,
                                                                    line=dict(color="white", width=1)),
                                 hovertemplate="trial %{x}<br>ppl %{y:.4g}<extra>complete</extra>"))
    if len(stopped):
        inside = stopped[stopped["ppl"].astype(float) <= yr.hi]
        fig.add_trace(go.Scatter(x=inside["trial"].tolist(), y=inside["ppl"].tolist(), mode="markers",
                                 name="stopped early (halving)",
                                 marker=dict(color=nr, size=13 if big else 11, symbol="circle-open", line=dict(width=2)),
                                 customdata=inside["windows"].tolist(),
                                 hovertemplate="trial %{x}<br>ppl %{y:.4g} after %{customdata} windows"
                                               "<extra>stopped early</extra>"))
    for part, label in ((comp, "complete"), (stopped, "stopped early")):
        high = part[part["ppl"].astype(float) > yr.hi]
        if len(high):
            fig.add_trace(go.Scatter(x=high["trial"].tolist(), y=[edge_y] * len(high), mode="markers+text",
                                     name=f"{label}, off the scale", showlegend=False, cliponaxis=False,
                                     text=[f"{charts.number_text(v)} ↑" for v in high["ppl"]],
                                     textposition="bottom center", textfont=dict(color=nr),
                                     marker=dict(color=nr, size=14, symbol="triangle-up"),
                                     customdata=[ui.fmt_ppl(v) for v in high["ppl"]],
                                     hovertemplate="trial %{x}<br>ppl %{customdata} (off the scale)<extra></extra>"))
            off_scale += [f"trial {int(t)} ({label}) {charts.number_text(v)}" for t, v in zip(high["trial"], high["ppl"])]
    if len(best):
        fig.add_trace(go.Scatter(x=best["trial"].tolist(), y=best["ppl"].tolist(), mode="lines", name="best so far",
                                 line=dict(color=nr, width=3, shape="hv"), hoverinfo="skip"))
    for label, v in base_vals.items():
        if v is None:
            continue
        color = "#444444" if label == "dense" else charts.method_color(label)
        if yr.lo <= v <= yr.hi:
            ui.reference_line(fig, v, f"{label} {v:.2f}", log=True, color=color, dash="dash", side="left")
        else:
            off_scale.append(f"{label} baseline {charts.number_text(v)}")
    n = int(trials["trial"].max()) + 1 if len(trials) else 1
    fig.update_layout(title="Optimization history (dashed: baselines at the same sparsity)",
                      xaxis_title="trial", yaxis_title="pruned perplexity", height=520 if big else 460,
                      xaxis=dict(tick0=0, dtick=charts.integer_dtick(n), tickformat="d", range=[-0.5, n - 0.5]),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1))
    ui.log_axis(fig, drawn, "y", lo=yr.lo, hi=yr.hi)
    return fig, off_scale


def legible_slice(fig: go.Figure, n: int) -> go.Figure:
    """Optuna's slice plot colours trials by number on "Blues", which starts at white: trial 0 vanished on the
    white background. A scale from light-mid blue to dark, outlined markers, whole-number colour ticks."""
    for trace in fig.data:
        if getattr(trace, "marker", None) is not None and trace.marker.colorscale is not None:
            trace.marker.update(colorscale=[[0, "#9ecae1"], [1, "#08306b"]], size=11,
                                line=dict(color="#08306b", width=1))
            if trace.marker.colorbar is not None:
                trace.marker.colorbar.update(dtick=charts.integer_dtick(n), tickformat="d")
    return fig


def legible_importance(fig: go.Figure) -> go.Figure:
    """Optuna's importance bars carry their value as text outside the bar: room for it on the axis (the
    label "0.50" was clipped at the right edge)."""
    top = max((max(t.x) for t in fig.data if getattr(t, "x", None) is not None and len(t.x)), default=1.0)
    fig.update_traces(cliponaxis=False, textfont_size=16 if ui.presentation_mode() else 14)
    fig.update_xaxes(range=[0, float(top) * 1.3])
    return fig


@st.cache_data(max_entries=16, show_spinner=False)
def figures(name: str, signature: tuple, present: bool) -> dict:
    """Optuna's plotly figures of a study; recomputed only when a trial changed (`signature`)."""
    study = search.load_study(name)
    baselines = study.user_attrs.get("baselines") or {}
    frame = search.trials_frame(study)
    complete = int((frame["state"] == "complete").sum()) if len(frame) else 0
    out = {}
    out["history"], out["off_scale"] = history_figure(frame, baselines)
    if complete >= 2:
        fig = ov.plot_contour(study, params=list(PARAMS), target_name="ppl")
        fig.update_layout(title="Contour of the pruned perplexity", height=700 if present else 650)
        out["contour"] = fig
        fig = ov.plot_slice(study, params=list(PARAMS), target_name="ppl")
        fig.update_layout(title="Slice: perplexity against each exponent<br><sup>colour: trial number</sup>",
                          height=480 if present else 420)
        out["slice"] = legible_slice(fig, len(frame))
    out["importance_note"] = studies.importance_note(complete)
    if complete >= studies.IMPORTANCE_MIN:
        try:
            fig = ov.plot_param_importances(study, target_name="ppl")
            fig.update_layout(title=f"Parameter importances ({complete} complete trials)", height=360 if present else 320)
            out["importance"] = legible_importance(fig)
        except (RuntimeError, ValueError):  # too few distinct trials to say
            out["importance_note"] = "Parameter importances: these trials are too alike to tell the exponents apart."
    return out


def time_left(study, summary: dict, trials_target: int) -> str | None:
    """How long the running study still needs, at the rates its own trials measured (before its first
    trial: earlier studies' or prune runs'); None when it is done."""
    left = max(trials_target - summary["trials"], 0)
    ev = summary["evaluation"] or {}
    proto = summary["protocol"] or {}
    windows = int(ev.get("windows") or proto.get("eval_windows") or 16)
    chunks = ev.get("chunks") or search.chunk_sizes(int(proto.get("rungs") or 1), windows)
    baselines_left = 0 if summary["baselines"] else len(BASELINES)
    if left == 0 and baselines_left == 0:
        return None
    samples = search.trial_samples(study)
    r = studies.rates(samples, f"{len(samples)} measured trial(s) of this study") if samples else None
    if r is None:
        try:
            past, name = _past(proto.get("model"), proto.get("sparsity_type"), proto.get("eval_seqlen"))
        except UserError:
            past, name = [], None
        r = studies.rates([s for s in past], f"at the rates measured in study {name}") if past else None
    if r is None:
        r = studies.rates(studies.run_samples(store.list(kind="prune", limit=500), proto.get("model"),
                                              proto.get("eval_seqlen")), "at the rates of this model's prune runs")
    e = studies.search_estimate(left, windows, chunks, r, baselines_left=baselines_left)
    what = f"{left} trial(s) left" + (" after the baselines" if baselines_left else "")
    return f"Time left: {studies.estimate_text(e)} — {what}."


def show_study(name: str, run: dict | None) -> None:
    starting = run is not None and run["status"] in ui.ACTIVE
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
    windows = ev.get("windows", proto.get("eval_windows"))
    chunks = ev.get("chunks") or (search.chunk_sizes(int(proto.get("rungs") or 1), int(windows))
                                  if windows else None)
    st.subheader(f"Study {plain(name)}")
    st.caption(f"{plain(proto.get('sparsity_type'))} sparsity {plain(proto.get('sparsity_ratio'))}, perplexity on "
               f"{plain(ev.get('source', proto.get('eval')))}, seqlen {ev.get('seqlen', proto.get('eval_seqlen'))}, "
               f"{windows} windows ({studies.halving_text(chunks)}); "
               f"{summary['trials']} trials finished, {summary['pruned']} stopped early, {summary['failed']} failed, "
               f"{summary['running']} running.")
    if starting or summary["running"]:
        target = int((run or {}).get("params", {}).get("trials") or search.stored_request(study).trials)
        left = time_left(study, summary, target)
        if left:
            st.caption(plain(left))
    # three to a row with short numbers: five metrics in one row read "39.…" on a projector at 150 %
    cells = []
    if best:
        wanda = (baselines.get("wanda") or {}).get("ppl")
        cells.append(("Best NeuronRank-OLD", best["ppl"],
                      None if wanda is None or best["ppl"] is None else f"{best['ppl'] - wanda:+.2f} vs wanda",
                      f"trial {best['trial']}: " + ", ".join(f"{k}={best[k]:.3f}" for k in PARAMS)))
    cells += [(f"{plain(label)} baseline", b.get("ppl"), None, None) for label, b in baselines.items()]
    for row in range(0, len(cells), 3):
        for col, (label, value, delta, tip) in zip(st.columns(3), cells[row:row + 3]):
            col.metric(label, charts.ppl_short(value) if value is not None else ui.fmt_ppl(value), delta=delta,
                       delta_color="inverse", help=tip)
    if best:
        st.write("Best exponents: " + ", ".join(f"{EXPONENT_LABELS[k]} = {best[k]:.3f}" for k in PARAMS))
        st.button("Apply best to the Exponents sliders", on_click=_apply, args=(best, proto.get("sparsity_ratio")),
                  key=f"apply_{name}")
        applied = st.session_state.pop("_search_applied", None)
        if applied:
            note = f" ({', '.join(applied[1])} clipped to the sliders' range)" if applied[1] else ""
            st.success("Exponents set" + note + ": open the Exponents or Prune & evaluate page.")
    trials = study.get_trials(deepcopy=False)
    signature = tuple((t.number, t.state.name, len(t.intermediate_values)) for t in trials) + (
        bool(baselines),)
    figs = figures(name, signature, ui.presentation_mode())
    ui.chart(figs["history"], f"search_history_{name}", key=f"hist_{name}")
    if figs["off_scale"]:
        st.caption(plain("Off the scale (above the chart, so they do not squash the trials): "
                         + "; ".join(figs["off_scale"])))
    if "contour" in figs:
        ui.chart(figs["contour"], f"search_contour_{name}", key=f"contour_{name}")
        # one above the other: side by side, the slice's three panels and its title were squeezed and cut at
        # a 1280 px projector at 150 %
        ui.chart(figs["slice"], f"search_slice_{name}", key=f"slice_{name}")
        if "importance" in figs:
            ui.chart(figs["importance"], f"search_importance_{name}", key=f"imp_{name}")
        if figs["importance_note"]:
            st.caption(plain(figs["importance_note"]))
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
            show_study(name, run)


def _label(run: dict) -> str:
    return f"study {run_study(run) or '?'}, {(run['params'] or {}).get('trials')} trials"


ui.follow_run("search", _search_and_study, param="search_run", stop="Stop search", busy=_study_running,
              others=_label)

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
                              key="past_studies", placeholder=ui.MISSING)
        rows = picked.selection.rows if picked and picked.selection else []
        if rows and st.button(f"Open study {plain(past.iloc[rows[0]]['study'])}", key="open_study"):
            st.query_params["study"] = str(past.iloc[rows[0]]["study"])
            ui.forget_run("search", "search_run")  # the run followed so far is another study's
            st.rerun()
