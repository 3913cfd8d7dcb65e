"""Prune & evaluate: start a run in a worker process, follow it (it survives reloads: the run id is in
the URL), compare runs, and sweep two exponents into a perplexity landscape."""

from dataclasses import replace

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

import ui
from neuronrank import UserError, history, jobs, requests, views
from neuronrank.requests import PruneRequest
from neuronrank.runs import RunStore
from neuronrank.store import get_entry

ui.page_setup()
st.title("Prune & evaluate")
f = lambda name: requests.spec(PruneRequest, name)  # noqa: E731  (defaults, bounds, choices, help)
chosen = ui.exponents()


def calibration_params() -> dict:
    """The loaded statistics entry's calibration (so the prune uses the statistics being explored),
    else the sidebar's parameters for new statistics."""
    key = st.session_state.get("entry_key")
    if key:
        try:
            return views.stats_params_of(get_entry(key).params)
        except UserError:
            pass
    return views.stats_params_of(st.session_state.get("stats_params", {}))


calib = calibration_params()
base = PruneRequest(**calib)

# plain widgets, not a form: the sweep below reuses these settings, and a form would only commit them
# on its own submit
with st.container(border=True):
    c1, c2, c3 = st.columns(3)
    method = c1.selectbox(f("prune_method").label, list(f("prune_method").choices),
                          index=list(f("prune_method").choices).index(f("prune_method").default),
                          help="neuronrank_old uses the exponents below; magnitude, wanda and random are the baselines")
    stype = c2.selectbox(f("sparsity_type").label, list(f("sparsity_type").choices), help=f("sparsity_type").help)
    ratio = c3.slider(f("sparsity_ratio").label, 0.0, 0.95, float(chosen["sparsity"]), 0.05)
    c1, c2, c3, c4 = st.columns(4)
    alpha = c1.number_input(f("alpha").label, 0.0, 10.0, chosen["alpha"], 0.1)
    beta = c2.number_input(f("beta").label, 0.0, 10.0, chosen["beta"], 0.1)
    gamma = c3.number_input(f("gamma").label, 0.0, 10.0, chosen["gamma"], 0.1)
    last = c4.number_input(f("pruning_last").label, 0, 1000, 0)
    c1, c2, c3 = st.columns(3)
    eval_src = c1.text_input(f("eval").label, f("eval").default, help=f("eval").help)
    eval_seqlen = c2.number_input(f("eval_seqlen").label, f("eval_seqlen").lo, requests.MAX_SEQLEN,
                                  f("eval_seqlen").default)
    eval_windows = c3.number_input(f("eval_windows").label, 0, 100_000, f("eval_windows").default,
                                   placeholder="auto: 16 on a CPU, all on a GPU",
                                   help="A cap keeps a CPU run near a minute; empty = automatic (16 windows on a "
                                        "CPU, all on a GPU); it is shown with every result")
    st.caption(f"Calibration (the loaded statistics entry): {base.model}, {base.calib}, "
               f"{base.nsamples} × {base.seqlen} tokens, seed {base.seed}, site {base.site}")
    start = st.button("Start prune + evaluate", type="primary")


def request_now(**over) -> PruneRequest:
    values = dict(prune_method=method, sparsity_type=stype, sparsity_ratio=float(ratio), alpha=float(alpha),
                  beta=float(beta), gamma=float(gamma), pruning_last=int(last) or None, eval=eval_src.strip(),
                  eval_seqlen=int(eval_seqlen), eval_windows=None if eval_windows is None else int(eval_windows))
    req = replace(base, **{**values, **over})
    req.validate()  # refuse bad input here, not in the worker
    requests.check_inputs(req)
    return req


if start:
    with ui.user_errors():
        st.query_params["run"] = str(jobs.submit("prune", request_now()))

store = RunStore()
if store.notice:  # a damaged run store was moved aside and a fresh one started
    st.warning(store.notice)


@st.fragment(run_every=1.0)
def follow() -> None:
    run_id = st.query_params.get("run")
    if not run_id:
        return
    try:
        run = store.get(int(run_id))
    except (ValueError, UserError):
        st.warning(f"Run {run_id} does not exist.")
        return
    p = run["params"]
    st.subheader(f"Run {run['id']}: {p.get('prune_method')} {p.get('sparsity_type')} {p.get('sparsity_ratio')}")
    if run["status"] in ("queued", "running"):
        st.progress(run["progress"], text=f"{run['status']}: {run['message'] or 'waiting for the worker'}")
        if st.button("Cancel run", key=f"cancel_{run['id']}"):
            jobs.cancel(run["id"])
            st.rerun()
        jobs.recover(store)  # runs whose process is gone -> failed; a queue without a dispatcher gets one
        return
    if run["status"] == "failed":
        st.error(f"Run {run['id']} failed: {run['error']}")
        return
    if run["status"] == "cancelled":
        st.warning(f"Run {run['id']} was cancelled.")
        return
    res = run["result"]
    for miss in res.get("not_written", []):
        st.warning(f"Not written: {miss['target']} {miss['path']}: {miss['error']}. The results below are "
                   "kept in the run history.")
    proto = res["protocol"]
    c1, c2, c3 = st.columns(3)
    c1.metric("Dense perplexity", f"{res['dense_ppl']:.3f}")
    c2.metric("Pruned perplexity", f"{res['pruned_ppl']:.3f}", delta=f"{res['pruned_ppl'] - res['dense_ppl']:+.3f}",
              delta_color="inverse")
    c3.metric("MLP sparsity", f"{res['sparsity']['mlp']:.2%}")
    st.caption(f"Perplexity on {proto['source']}, seqlen {proto['seqlen']}, {proto['windows']} windows, "
               f"{proto['tokens']:,} predicted tokens. All decoder linears: {res['sparsity']['all_linear']:.2%}; "
               f"attention: {res['sparsity']['attention']:.2%}.")
    st.caption("Timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in res["timings"].items()))
    mods = pd.DataFrame(res.get("sparsity_modules", []))
    if not mods.empty:
        fig = px.bar(mods, x="layer", y="fraction", color="module", barmode="group",
                     title="Fraction of zero weights per layer and module")
        ui.chart(fig, f"sparsity_run{run['id']}", key=f"sp_{run['id']}")
        ui.table(mods, f"sparsity_run{run['id']}", hide_index=True)


follow()

st.divider()
st.subheader("Run history")
frame = history.runs_frame(store.list(kind="prune"))
if frame.empty:
    st.info("No prune runs yet.")
else:
    picked = st.dataframe(frame, hide_index=True, on_select="rerun", selection_mode="multi-row", key="history")
    st.download_button("Download CSV", frame.to_csv(index=False).encode(), "runs.csv", "text/csv", on_click="ignore")
    rows = picked.selection.rows if picked and picked.selection else []
    chosen_runs = frame.iloc[rows] if rows else frame
    comp = history.comparison(chosen_runs)
    if not comp.empty:
        comp["label"] = comp["method"] + " / " + comp["type"]
        fig = px.line(comp, x="ratio", y="pruned_ppl", color="label", markers=True, log_y=True,
                      title="Pruned perplexity vs sparsity" + (" (selected runs)" if rows else " (all finished runs)"))
        ui.chart(fig, "ppl_vs_sparsity")

st.divider()
st.subheader("Exponent landscape (sweep)")
with st.form("sweep"):
    c1, c2 = st.columns(2)
    x = c1.selectbox("x axis", list(requests.EXPONENT_LABELS), format_func=requests.EXPONENT_LABELS.get, index=0)
    xs = c1.text_input("x values", "0, 1, 2")
    y = c2.selectbox("y axis", list(requests.EXPONENT_LABELS), format_func=requests.EXPONENT_LABELS.get, index=2)
    ys = c2.text_input("y values", "0, 1, 2")
    st.caption("Every other setting comes from the form above (method neuronrank_old is used).")
    go_sweep = st.form_submit_button("Queue sweep")
if go_sweep:
    with ui.user_errors():
        sweep = requests.sweep_axes(request_now(prune_method="neuronrank_old"), x, xs, y, ys)
        sweep.validate()
        group = requests.new_sweep_group()
        for req in sweep.grid():
            jobs.submit("prune", req, group=group)
        st.query_params["sweep"] = group
        st.query_params["sweep_axes"] = f"{x},{y}"


@st.fragment(run_every=2.0)
def landscape() -> None:
    group = st.query_params.get("sweep")
    axes = st.query_params.get("sweep_axes", "alpha,gamma").split(",")
    if not group or len(axes) != 2:
        return
    runs = store.list(group=group)
    grid = history.landscape(runs, axes[0], axes[1])
    done = sum(r["status"] == "done" for r in runs)
    st.caption(f"Sweep {group}: {done}/{len(runs)} runs finished"
               + ("; failed: " + ", ".join(str(r['id']) for r in runs if r["status"] == "failed")
                  if any(r["status"] == "failed" for r in runs) else ""))
    if grid.empty:
        return
    fig = go.Figure(go.Heatmap(z=grid.to_numpy().tolist(), x=[f"{v:g}" for v in grid.columns], y=[f"{v:g}" for v in grid.index],
                               colorscale="Viridis", colorbar_title="ppl",
                               hovertemplate=f"{axes[0]} %{{x}}<br>{axes[1]} %{{y}}<br>ppl %{{z:.3f}}<extra></extra>"))
    fig.update_layout(title="Pruned perplexity", xaxis_title=requests.EXPONENT_LABELS[axes[0]],
                      yaxis_title=requests.EXPONENT_LABELS[axes[1]])
    ui.chart(fig, f"landscape_{group}", key=f"land_{group}")
    ui.table(grid.reset_index(), f"landscape_{group}")


landscape()
