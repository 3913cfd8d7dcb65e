"""Prune & evaluate: start a run in a worker process, follow it (it survives reloads: the run id is in
the URL), compare runs, and sweep two exponents into a perplexity landscape."""

from dataclasses import replace

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

import ui
from neuronrank.analysis.numbers import finite
from neuronrank.config import requests
from neuronrank.config.fields import spec
from neuronrank.config.methods import METHODS, nm
from neuronrank.config.requests import PruneRequest, app_message
from neuronrank.data.inputs import check_inputs
from neuronrank.evaluation.zeroshot import WANDA_TASKS
from neuronrank.queue import jobs
from neuronrank.runs.store import RunStore
from neuronrank import UserError
from neuronrank.views import charts, history
from neuronrank.views.display import URL_CHOICES, plain
from neuronrank.views.history import decade_ticks

ui.page_setup()
st.title("Prune & evaluate")
f = lambda name: spec(PruneRequest, name)  # noqa: E731  (defaults, bounds, choices, labels, help)
chosen = ui.exponents()
store = RunStore()
calib, entry_layers = ui.calibration()
from_entry = entry_layers is not None
base = PruneRequest(**calib)

def request_now(**over) -> PruneRequest:
    """The run the widgets describe, validated (called as they change, and at Start)."""
    values = dict(prune_method=method, sparsity_type=stype, sparsity_ratio=float(ratio), alpha=float(alpha),
                  beta=float(beta), gamma=float(gamma), pruning_last=int(last) or None, eval=eval_src.strip(),
                  eval_seqlen=int(eval_seqlen), eval_windows=None if eval_windows is None else int(eval_windows),
                  calibration=calibration, group=group if stype == "unstructured" and group != "own" else None,
                  targets=targets, layer_sparsity=layer_sparsity,
                  owl_threshold=float(owl_m) if layer_sparsity == "owl" else None,
                  owl_lambda=float(owl_lam) if layer_sparsity == "owl" else None,
                  compensate=compensate if stype == "structured" and compensate != "own" else None,
                  eval_tasks=",".join(tasks) or None, eval_tasks_path=tasks_path.strip() or None)
    req = replace(base, **{**values, **over})
    req.validate(entry_layers)  # refuse bad input here, not in the worker
    check_inputs(req)
    return req


# plain widgets, not a form: the sweep below reuses these settings, and a form would only commit them
# on its own submit. Every setting persists across visits (ui.persisted).
with st.container(border=True):
    # rows that wrap: at 1280 px / 150 % a row of four cut every chosen value ("the metho…", "auto: 16 on…");
    # each field keeps a width its values fit and a row holds as many as the screen has room for
    row = ui.form_row()
    methods = list(f("prune_method").choices)
    method = row.selectbox(f("prune_method").label, methods, key=ui.persisted("pr_method", f("prune_method").default),
                           help="\n\n".join(f"**{m}** — {METHODS[m].summary}" for m in methods), width=ui.FIELD_PX)
    ui.keep("pr_method")
    stype = row.selectbox(f("sparsity_type").label, list(f("sparsity_type").choices), help=f("sparsity_type").help,
                          key=ui.persisted("pr_type", f("sparsity_type").default), width=ui.FIELD_PX)
    ui.keep("pr_type")
    if ":" in stype:  # N:M fixes the ratio: shown, set and locked
        n, m = nm(stype)
        ratio = row.slider(f("sparsity_ratio").label, 0.0, 0.95, n / m, 0.05, disabled=True,
                           help=f"{stype} prunes {n} of every {m} weights: the ratio is {n / m:.0%}", width=ui.FIELD_PX)
    else:
        ratio = row.slider(f("sparsity_ratio").label, 0.0, 0.95, float(chosen["sparsity"]), 0.05,
                           help="Starts at the Exponents page's sparsity", width=ui.FIELD_PX)
    info = METHODS[method]
    uses_exponents = info.uses_exponents
    last = row.number_input(f("pruning_last").label, 0, 1000, key=ui.persisted("pr_last", 0), width=ui.FIELD_PX)
    ui.keep("pr_last")
    row = ui.form_row()
    exp_help = None if uses_exponents else f"{method} does not use the exponents"
    # no min/max on the widgets: a value typed out of range would be kept out of Python (the field turns red,
    # the old value stays and Start would run it); validation below says what is wrong and disables Start
    alpha = row.number_input(f("alpha").label, None, None, chosen["alpha"], 0.1, disabled=not uses_exponents,
                             help=exp_help, width=ui.FIELD_PX)
    beta = row.number_input(f("beta").label, None, None, chosen["beta"], 0.1, disabled=not uses_exponents,
                            help=exp_help, width=ui.FIELD_PX)
    gamma = row.number_input(f("gamma").label, None, None, chosen["gamma"], 0.1, disabled=not uses_exponents,
                             help=exp_help, width=ui.FIELD_PX)
    row = ui.form_row()
    eval_src = row.text_input(f("eval").label, help=f("eval").help, key=ui.persisted("pr_eval", f("eval").default),
                              width=ui.FIELD_PX)
    ui.keep("pr_eval")
    eval_seqlen = row.number_input(f("eval_seqlen").label, f("eval_seqlen").lo, requests.MAX_SEQLEN,
                                   key=ui.persisted("pr_eval_seqlen", f("eval_seqlen").default), width=ui.FIELD_PX)
    ui.keep("pr_eval_seqlen")
    eval_windows = row.number_input(f("eval_windows").label, 0, 100_000, placeholder=ui.AUTO_WINDOWS,
                                    key=ui.persisted("pr_eval_windows", f("eval_windows").default),
                                    help=ui.AUTO_WINDOWS_HELP + " The protocol is shown with every result.",
                                    width=ui.FIELD_PX)
    ui.keep("pr_eval_windows")
    tasks = row.multiselect(f("eval_tasks").label, list(WANDA_TASKS), accept_new_options=True, wrap=True,
                            placeholder="none", key=ui.persisted("pr_tasks", []), width=ui.FIELD_PX,
                            help="lm-eval-harness tasks run on the pruned model, accuracy stored with the run "
                                 "(Wanda's seven are listed; type another task's name to add it). None: perplexity "
                                 "only. Offline, a task whose data is not cached fails the run with the task's name.")
    ui.keep("pr_tasks")
    tasks_path = ""
    if tasks:
        tasks_path = row.text_input(f("eval_tasks_path").label, key=ui.persisted("pr_tasks_path", ""),
                                    help="Optional: a local task (YAML + JSONL), as --eval-tasks-path", width=ui.FIELD_PX)
        ui.keep("pr_tasks_path")
    # how the method calibrates and what it prunes: each method's own setup unless changed here ("own: …"
    # names it; "own", not None: a selectbox shows a None value as "Choose an option")
    row = ui.form_row()
    locked = info.locked_calibration(stype)
    if locked:
        shown, why = locked
        row.selectbox(f("calibration").label, [shown], disabled=True, help=why, key=f"pr_calibration_fixed_{shown}",
                      width=ui.FIELD_PX)
        calibration = f("calibration").default
    else:
        calibration = row.selectbox(f("calibration").label, ["own", *f("calibration").choices],
                                    format_func=lambda c: f"own: {info.default_calibration}" if c == "own" else c,
                                    help=f("calibration").help,
                                    key=ui.relabel(ui.persisted("pr_calibration", "own")), width=ui.FIELD_PX)
        ui.keep("pr_calibration")
        calibration = None if calibration == "own" else calibration
    group = row.selectbox(f("group").label, ["own", *f("group").choices], disabled=stype != "unstructured",
                          format_func=lambda g: f"own: per {info.group}" if g == "own" else f"per {g}",
                          help="Unstructured: which weights compete for pruning — one threshold per matrix or per "
                               "output row. own: the method's own (Wanda: per row, as upstream Wanda; "
                               "magnitude: per matrix, as Wanda's prune_magnitude).",
                          key=ui.relabel(ui.persisted("pr_group", "own")), width=ui.FIELD_PX)
    ui.keep("pr_group")
    mlp_only = info.prunes_mlp_only(stype)
    targets = row.selectbox(f("targets").label, list(f("targets").choices), disabled=mlp_only,
                            format_func={"mlp": "MLP only", "all": "all linears"}.get,
                            help=("NeuronRank scores and structured pruning address MLP neurons only" if mlp_only
                                  else "all linears: MLP and attention — upstream Wanda and SparseGPT prune every "
                                       "linear of each decoder layer"),
                            key=ui.persisted("pr_targets", f("targets").default), width=ui.FIELD_PX)
    ui.keep("pr_targets")
    targets = "mlp" if mlp_only else targets
    compensate = row.selectbox(f("compensate").label, ["own", *f("compensate").choices], disabled=stype != "structured",
                               format_func=lambda c: f"own: {info.compensate}" if c == "own" else c,
                               help=f("compensate").help,
                               key=ui.relabel(ui.persisted("pr_compensate", "own")), width=ui.FIELD_PX)
    ui.keep("pr_compensate")
    # OWL's layer sparsity (unstructured)
    row = ui.form_row()
    owl_open = stype == "unstructured" and info.outlier_metric is not None
    layer_sparsity = row.selectbox(f("layer_sparsity").label, list(f("layer_sparsity").choices), disabled=not owl_open,
                                   format_func={"uniform": "uniform", "owl": "OWL"}.get,
                                   help=f("layer_sparsity").help,
                                   key=ui.persisted("pr_layer_sparsity", "uniform"), width=ui.FIELD_PX)
    ui.keep("pr_layer_sparsity")
    layer_sparsity = layer_sparsity if owl_open else "uniform"
    owl_m = row.number_input(f("owl_threshold").label, None, None, step=0.5, disabled=layer_sparsity != "owl",
                             help=f("owl_threshold").help, key=ui.persisted("pr_owl_m", requests.OWL_THRESHOLD),
                             width=ui.FIELD_PX)
    ui.keep("pr_owl_m")
    owl_lam = row.number_input(f("owl_lambda").label, None, None, step=0.01, disabled=layer_sparsity != "owl",
                               help=f("owl_lambda").help, key=ui.persisted("pr_owl_lambda", requests.OWL_LAMBDA),
                               width=ui.FIELD_PX)
    ui.keep("pr_owl_lambda")
    # bad input shows as it is typed, in the app's words (not at Start, not 10 s later in a worker)
    problem = ui.source_problem(eval_src, "eval") or (
        ui.path_problem(tasks_path, "folder of task YAMLs", folder=True) if tasks_path.strip() else None)
    if problem is None:
        try:
            request_now()
        except UserError as e:
            problem = app_message(e)
    if problem:
        st.error(plain(problem))
    source = "the loaded statistics entry" if from_entry else "the sidebar (no statistics entry loaded)"
    st.caption(f"Calibration ({source}): {plain(base.model)}, {plain(base.calib)}, {base.nsamples} × "
               f"{base.seqlen} tokens, seed {base.seed}, site {base.site}"
               + ("" if info.needs_stats else f" — not used by {method}")
               + (f". Weights compete per {info.group if group == 'own' else group}"
                  if stype == "unstructured" else ""))
    start = st.button("Start prune + evaluate", type="primary", disabled=bool(problem))


if start:
    with ui.user_errors():
        st.query_params["run"] = str(jobs.submit("prune", request_now()))

if store.notice:  # a damaged run store was moved aside and a fresh one started
    st.warning(store.notice)


def _header(run: dict) -> None:
    p = run["params"]
    st.subheader(f"Run {run['id']}: {plain(history.run_label(p))}, {float(p.get('sparsity_ratio', 0)):.0%} sparsity")


def _outcome(run: dict | None) -> None:
    """A finished prune run: its perplexities, sparsity and timings (it stays in the URL)."""
    if run is None or run["status"] in ui.ACTIVE:
        return
    if run["status"] == "failed":
        st.error(f"Run {run['id']} failed: {plain(run['error'])}")
        return
    if run["status"] == "cancelled":
        st.warning(f"Run {run['id']} was cancelled.")
        return
    res = run["result"]
    if res.get("zero_shot_failed"):
        st.warning(f"{plain(res['zero_shot_failed']['error'])}. The perplexities below are kept in the run history.")
    for miss in res.get("not_written", []):
        st.warning(f"Not written: {miss['target']} {plain(miss['path'])}: {plain(miss['error'])}. The results below "
                   "are kept in the run history.")
    proto = res["protocol"]
    c1, c2, c3 = st.columns(3)
    c1.metric("Dense perplexity", ui.fmt_ppl(res["dense_ppl"]))
    diverged = finite(res["pruned_ppl"]) is None
    c2.metric("Pruned perplexity", ui.fmt_ppl(res["pruned_ppl"]),
              delta=None if diverged else f"{res['pruned_ppl'] - res['dense_ppl']:+.3f}", delta_color="inverse")
    c3.metric("MLP sparsity", f"{res['sparsity']['mlp']:.2%}")
    st.caption(f"Perplexity on {plain(proto['source'])}, seqlen {proto['seqlen']}, {proto['windows']} windows, "
               f"{proto['tokens']:,} predicted tokens. All decoder linears: {res['sparsity']['all_linear']:.2%}; "
               f"attention: {res['sparsity']['attention']:.2%}.")
    st.caption("Timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in res["timings"].items()))
    if res.get("zero_shot"):
        st.markdown("**Zero-shot accuracy** (lm-eval, on the pruned model)")
        ui.table(pd.DataFrame([{"task": t, **m} for t, m in res["zero_shot"].items()]), f"zero_shot_run{run['id']}")
    mods = pd.DataFrame(res.get("sparsity_modules", []))
    if not mods.empty:
        fig = px.bar(mods, x="layer", y="fraction", color="module", barmode="group",
                     title="Fraction of zero weights per layer and module")
        fig.update_layout(yaxis_tickformat=".0%", yaxis_title="zero weights")
        ui.chart(fig, f"sparsity_run{run['id']}", key=f"sp_{run['id']}")
        with st.expander("Per module (table)"):
            ui.table(mods, f"sparsity_run{run['id']}", hide_index=True)


def _label(run: dict) -> str:
    p = run["params"]
    return f"{history.run_label(p)}, {float(p.get('sparsity_ratio', 0)):.0%} sparsity" + (
        f" (sweep {run['grp']})" if str(run.get("grp") or "").startswith("sweep-") else "")


ui.follow_run("prune", _outcome, header=_header, stop="Cancel run", others=_label)

# ----------------------------------------------------------------------------------------------
# history and the comparison chart (refreshed while any prune run is queued or running)

st.divider()
st.subheader("Run history")
any_active = any(r["status"] in ("queued", "running") for r in store.list(kind="prune", limit=50))
TYPES = list(URL_CHOICES["cmp_type"])


def comparison_figure(comp: pd.DataFrame, proto: tuple, log: bool, title_scope: str):
    """The pruned perplexity per series against sparsity: a fixed colour per series, 1-2-5 ticks, outliers at
    the top edge (returned: the rows drawn there)."""
    dense = comp["dense_ppl"].dropna()
    dense_v = float(dense.iloc[0]) if len(dense) else None
    yr = charts.robust_range(comp["pruned_ppl"], keep=[dense_v], log=log)
    comp = comp.assign(outlier=yr.outliers)
    edge = yr.hi / (10 ** (0.03 * (np.log10(yr.hi / yr.lo)))) if log else yr.hi - 0.03 * (yr.hi - yr.lo)
    big = ui.presentation_mode()
    fig = go.Figure()
    for name, part in comp.groupby("series", sort=True):
        style = history.series_style(name, part["method"].iloc[0], part["type"].iloc[0])
        inside, off = part[~part["outlier"]], part[part["outlier"]]
        text = [ui.fmt_ppl(v) for v in inside["pruned_ppl"]]
        if len(inside):
            fig.add_trace(go.Scatter(
                x=inside["ratio"].tolist(), y=inside["pruned_ppl"].tolist(), name=name, legendgroup=name,
                mode="lines+markers", line=dict(color=style.color, width=3, dash=style.dash),
                marker=dict(color=style.color, size=14 if big else 12, symbol=style.symbol,
                            line=dict(color="white", width=1)),
                customdata=list(zip(text, inside["runs"].tolist())),
                hovertemplate=f"<b>{name}</b><br>sparsity %{{x:.0%}}<br>ppl %{{customdata[0]}}"
                              "<br>%{customdata[1]} run(s)<extra></extra>"))
        if len(off):
            vals = [charts.number_text(v) for v in off["pruned_ppl"]]
            fig.add_trace(go.Scatter(
                x=off["ratio"].tolist(), y=[edge] * len(off), name=name, legendgroup=name,
                showlegend=not len(inside),  # a series wholly off the scale is named by its ▲
                # the value left of the ▲: below it, it sat on the highest points inside the scale
                mode="markers+text", text=[f"{v} ↑" for v in vals], textposition="middle left",
                textfont=dict(color=style.color), cliponaxis=False,
                marker=dict(color=style.color, size=16 if big else 14, symbol="triangle-up",
                            line=dict(color="black", width=1)),
                customdata=vals, hovertemplate=f"<b>{name}</b><br>sparsity %{{x:.0%}}<br>ppl %{{customdata}} "
                                               "(off the scale)<extra></extra>"))
    if dense_v is not None:
        ui.reference_line(fig, dense_v, f"dense {dense_v:.2f}", log=log)
    fig.update_layout(title=f"Pruned perplexity vs sparsity<br><sup>{title_scope}; {charts.chart_text(proto[0])}, seqlen {proto[1]:g}, "
                            f"{proto[2]:g} windows</sup>",
                      xaxis_title="sparsity (fraction of MLP weights or neurons pruned)", xaxis_tickformat=".0%",
                      xaxis_range=[-0.02, 1.0], xaxis_dtick=0.1,
                      yaxis_title="perplexity" + (" (log scale)" if log else ""),
                      hovermode="closest")
    # the legend below the x axis title, one series a row, in pixels: placed in the plot's coordinates it
    # ran into the axis title at presentation sizes and scrolled once a sweep added its series
    n = comp["series"].nunique() + 1  # one series a row, + the title's
    row = 38 if big else 30  # a legend row: the marker (up to 16 px) and its text, measured in Chromium
    below = (120 if big else 90) + n * row  # x ticks and title, then the legend
    fig.update_layout(height=(470 if big else 420) + below, margin=dict(b=below),
                      legend=dict(title=dict(text="method · type · exponents", side="top"), orientation="v",
                                  yref="container", y=0, yanchor="bottom", xanchor="left", x=0))
    if log:
        ui.log_axis(fig, [], "y", lo=yr.lo, hi=yr.hi)
    else:
        fig.update_yaxes(range=[yr.lo, yr.hi])
    return fig, comp[comp["outlier"]]


@st.fragment(run_every=ui.POLL_SECONDS if any_active else None)
def run_history() -> None:
    runs = store.list(kind="prune")
    frame = history.runs_frame(runs)
    if frame.empty:
        st.info("No prune runs yet.")
        return
    if any_active and not any(r["status"] in ("queued", "running") for r in runs[:50]):
        st.rerun()  # the last active run finished: redraw once without polling
    shown = history.history_table(frame)
    number = {"ratio": "%.2f", "pruned_ppl": "%.2f", "dense_ppl": "%.2f"}
    config = {c: (st.column_config.NumberColumn(c, format=number[c], width=w) if c in number
                  else st.column_config.Column(c, width=w)) for c, w in history.HISTORY_WIDTHS.items()}
    config["mlp_sparsity"] = st.column_config.NumberColumn("mlp_sparsity", format="%.4f")
    # a run's missing values (no exponents for magnitude, wanda, ...; no result yet) read "–", not "None"; the
    # columns stay numbers, so a click on α sorts 0.5 < 2 < 10
    st.dataframe(shown, hide_index=True, key="history", height=min(38 + 35 * len(shown), 400), column_config=config,
                 placeholder=ui.MISSING)
    st.download_button("Download CSV", frame.to_csv(index=False).encode(), "runs.csv", "text/csv",
                       on_click="ignore")
    finished = frame[(frame["status"] == "done") & frame["pruned_ppl"].notna()]
    labels = {int(r.run): f"{r.run}: {history.series_label(r.method, r.type, r.alpha, r.beta, r.gamma, calibration=r.calibration, per=r.per, targets=r.targets)}, {r.ratio:.0%}"
              for r in finished.itertuples()}
    stype = st.radio("Sparsity type", TYPES, horizontal=True, key=ui.url_state("cmp_type", "all"),
                     help="Compare only runs of this sparsity type (the link keeps it)")
    ui.url_keep("cmp_type", "all")
    c2, c3 = st.columns([1, 3], vertical_alignment="bottom")
    log = c2.toggle("log axis", key=ui.url_state("cmp_log", True), help="Perplexity on a log scale")
    ui.url_keep("cmp_log", True)
    picked = c3.multiselect("Compare only these runs (empty: every finished run)", list(labels),
                            format_func=labels.get, key=ui.url_state("cmp_runs", [], allowed=set(labels)),
                            placeholder="every finished run")
    ui.url_keep("cmp_runs", [])
    chosen = finished[finished["run"].isin(picked)] if picked else finished
    comp = history.comparison(chosen, sparsity_type=None if stype == "all" else stype)
    if comp.empty:
        st.info(f"No finished {'' if stype == 'all' else stype + ' '}runs to compare yet.")
        return
    # one protocol per chart (perplexities of different protocols don't compare): the newest run's
    newest = chosen if stype == "all" else chosen[chosen["type"] == stype]
    newest = newest.sort_values("run").iloc[-1]
    proto = (newest["eval"], newest["eval_seqlen"], newest["eval_windows"])
    protocols = comp.groupby(["eval", "eval_seqlen", "eval_windows"], dropna=False).size()
    comp = comp[(comp["eval"] == proto[0]) & (comp["eval_seqlen"] == proto[1]) & (comp["eval_windows"] == proto[2])]
    scope = ("chosen runs" if picked else "all finished runs") + ("" if stype == "all" else f", {stype}")
    fig, off = comparison_figure(comp.reset_index(drop=True), proto, log, scope)
    ui.chart(fig, "ppl_vs_sparsity", key="ppl_vs_sparsity")
    table = history.comparison_table(comp)
    colours = {name: history.series_style(name, part["method"].iloc[0], part["type"].iloc[0]).color
               for name, part in comp.groupby("series")}
    numbers = [c for c in table.columns if c != "series"]
    # the values as the hover writes them, "–" where a series has no run (a styled NaN read "None")
    table[numbers] = table[numbers].apply(lambda col: col.map(lambda v: charts.ppl_short(v) or "–"))
    styled = table.style \
        .map(lambda v: f"color: {colours.get(v, 'inherit')}; font-weight: 600", subset=["series"])
    st.markdown("**The chart's points**: pruned perplexity per series and sparsity")
    st.dataframe(styled, hide_index=True, key="ppl_table", height=min(38 + 35 * len(table), 640),
                 column_config={c: st.column_config.TextColumn(c, width=80, alignment="right")
                                for c in numbers})  # every row, no scrolling
    if len(off):
        st.caption("Off the scale (▲ at the top edge, so they do not squash the rest): " + "; ".join(
            plain(f"{r.series} at {r.ratio:.0%}: ppl {charts.number_text(r.pruned_ppl)}") for r in off.itertuples()))
    if len(protocols) > 1:
        st.caption(f"{len(protocols) - 1} other evaluation protocol(s) in the history are left out of the chart.")


run_history()

# ----------------------------------------------------------------------------------------------
# the exponent landscape

st.divider()
st.subheader("Exponent landscape (sweep)")
with st.form("sweep"):
    c1, c2 = st.columns(2)
    x = c1.selectbox("x axis", list(requests.EXPONENT_LABELS), format_func=requests.EXPONENT_LABELS.get, index=0)
    xs = c1.text_input("x values", "0, 1, 2")
    y = c2.selectbox("y axis", list(requests.EXPONENT_LABELS), format_func=requests.EXPONENT_LABELS.get, index=2)
    ys = c2.text_input("y values", "0, 1, 2")
    st.caption("Every other setting comes from the form above (method neuronrank_old is used, MLP only, no "
               "zero-shot tasks); a cell an identical earlier run has measured reuses it. Wanda and magnitude at "
               "the same sparsity are queued too, for reference, unless they already ran.")
    go_sweep = st.form_submit_button("Queue sweep")
if go_sweep:
    with ui.user_errors():
        # NeuronRank scores address MLP neurons; zero-shot tasks are not run on every cell of a sweep
        sweep = requests.sweep_axes(request_now(prune_method="neuronrank_old", targets="mlp", eval_tasks=None,
                                                eval_tasks_path=None), x, xs, y, ys)
        sweep.validate()
        group = requests.new_sweep_group()
        cells = jobs.submit_sweep(sweep, x, y, group)
        for baseline in ("wanda", "magnitude"):  # each in its own setup, at the sweep's calibration order
            jobs.reuse_or_submit("prune", request_now(prune_method=baseline, targets="mlp", group=None,
                                                      eval_tasks=None, eval_tasks_path=None), group=f"ref-{group}")
        ui.url_set("sweep", group)
        reused = sum(c["reused"] for c in cells)
        if reused:
            st.success(f"Sweep {group}: {len(cells)} cells, {reused} of them already measured by identical runs "
                       "(reused, not run again).")

sweeps = history.sweep_groups(store.list(kind="prune", limit=5000), store.sweeps())
if sweeps.empty:
    st.info("No sweeps yet.")
    named = ui.url_param("sweep")  # a malformed one gets its notice there
    if named is not None:
        st.warning(f"The link's sweep={plain(named)} is not in this run store; it was ignored.")
        st.query_params.pop("sweep", None)
else:
    labels = {r.group: f"{r.group}: {requests.EXPONENT_LABELS[r.x]} × {requests.EXPONENT_LABELS[r.y]}, "
                       f"{r.runs} runs" for r in sweeps.itertuples()}
    group = st.selectbox("Sweep", list(labels), format_func=labels.get,
                         key=ui.url_state("sweep", sweeps["group"].iloc[0], allowed=set(labels)),
                         help="past sweeps reopen here; the link names the one shown")
    ui.url_keep("sweep", always=True)
    row = sweeps.set_index("group").loc[group]
    axes = [row["x"], row["y"]]
    cells = row["cells"] if isinstance(row["cells"], list) else None

    def sweep_runs() -> list[dict]:
        return store.get_many([c["run"] for c in cells]) if cells is not None else store.list(group=group)

    active = any(r["status"] in ("queued", "running") for r in sweep_runs())

    @st.fragment(run_every=ui.POLL_SECONDS if active else None)
    def landscape() -> None:
        runs = sweep_runs()
        grid = history.landscape(runs, axes[0], axes[1], cells=cells)
        done = sum(r["status"] == "done" for r in runs)
        failed = [str(r["id"]) for r in runs if r["status"] == "failed"]
        reused = [str(c["run"]) for c in (cells or []) if c.get("reused")]
        st.caption(f"Sweep {group}: {done}/{len(runs)} runs finished" + ("; failed: " + ", ".join(failed) if failed
                                                                         else "")
                   + (f"; {len(reused)} cell(s) reuse identical earlier runs ({', '.join(reused)}), not run again"
                      if reused else ""))
        if grid.empty:
            return
        p0 = runs[0]["params"]
        frame = history.runs_frame(store.list(kind="prune", limit=5000))
        first_done = next((r for r in runs if r["status"] == "done"), None)
        proto = (first_done or {}).get("result", {}) or {}
        proto = proto.get("protocol", {})
        ref = history.reference_ppl(frame, p0["sparsity_type"], p0["sparsity_ratio"], p0["eval"],
                                    proto.get("seqlen", p0["eval_seqlen"]), proto.get("windows", 16),
                                    calibration=p0.get("calibration") or "one-pass")
        z = grid.to_numpy(dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            logz = np.where(np.isfinite(z) & (z > 0), np.log10(z), np.nan)
        ticks = decade_ticks(logz)
        text = [[("" if not np.isfinite(v) else f"{v:.1f}") for v in row] for row in z]
        xs_ = [f"{v:g}" for v in grid.columns]
        ys_ = [f"{v:g}" for v in grid.index]
        xl, yl = requests.EXPONENT_LABELS[axes[0]], requests.EXPONENT_LABELS[axes[1]]
        fig = go.Figure(go.Heatmap(
            z=np.where(np.isfinite(logz), logz, None).tolist(), x=xs_, y=ys_, text=text, texttemplate="%{text}",
            textfont=dict(size=20 if ui.presentation_mode() else 15),
            colorscale="Viridis_r", customdata=text,
            colorbar=dict(title="ppl", tickvals=ticks, ticktext=[f"{10 ** t:.3g}" for t in ticks]),
            hovertemplate=f"{xl} %{{x}}<br>{yl} %{{y}}<br>ppl %{{customdata}}<extra></extra>"))
        best = history.best_cell(grid)
        title = f"Pruned perplexity, {p0['sparsity_type']} {float(p0['sparsity_ratio']):.0%}"
        if best is not None:
            yv, xv, ppl = best
            xi, yi = list(grid.columns).index(xv), list(grid.index).index(yv)
            fig.data[0].text = [[(f"★ {t}" if (i, j) == (yi, xi) else t) for j, t in enumerate(row)]
                                for i, row in enumerate(text)]
            fig.add_shape(type="rect", x0=xi - 0.5, x1=xi + 0.5, y0=yi - 0.5, y1=yi + 0.5,
                          line=dict(color="#d62728", width=4))
            title += f" — best {ppl:.2f} at {axes[0]}={xv:g}, {axes[1]}={yv:g}"
        refs = [f"{k} {v:.2f}" for k, v in ref.items()]
        if refs:
            title += "<br><sup>same sparsity and protocol: " + ", ".join(refs) + "</sup>"
        fig.update_layout(title=title, xaxis_title=xl, yaxis_title=yl, height=520,
                          xaxis_type="category", yaxis_type="category")
        ui.chart(fig, f"landscape_{group}", key=f"land_{group}")
        if ref:
            cols = st.columns(len(ref))
            for col, (k, v) in zip(cols, ref.items()):
                col.metric(f"{k} at the same sparsity" if k != "dense" else "dense", f"{v:.3f}")
        else:
            st.caption("No wanda or magnitude run at this sparsity and protocol yet (their reference runs may still "
                       "be queued).")
        with st.expander("Grid (table)"):
            ui.table(grid.reset_index(), f"landscape_{group}")

    landscape()
