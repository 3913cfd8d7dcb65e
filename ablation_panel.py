"""The Roles page's ablation: what zeroing a role class (or one neuron) does to perplexity, against random
sets of the same size per layer — queued in a worker like every run, kept in the run history, followed
through reloads (the run id is in the URL as `ablate_run`).

    panel(entry, quantile, tf_threshold, idf_threshold, dead)   the form, its cost, the followed run's chart
    neuron_button(entry, layer, neuron)                          "zero this neuron -> Δppl" for the neuron panel
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

import ui
from neuronrank.analysis import ablation
from neuronrank.config.fields import spec
from neuronrank import UserError
from neuronrank.config.requests import AblateRequest, MAX_SEQLEN, app_message
from neuronrank.data.inputs import check_inputs
from neuronrank.queue import jobs
from neuronrank.views import ablation as view
from neuronrank.views.display import plain

PARAM = "ablate_run"  # the URL parameter of the followed ablation
ROOM = dict(font=dict(size=18), title_font_size=21)  # read from the back of a room
CONTROL_COLOUR, CLASS_COLOUR, DENSE_COLOUR = "#7f7f7f", "#1f4e9c", "#2e7d32"
f = lambda name: spec(AblateRequest, name)  # noqa: E731


def _request(entry, **values) -> AblateRequest:
    calib, n_layers = ui.calibration()
    req = AblateRequest(**{**calib, **values})
    req.validate(n_layers)
    check_inputs(req)
    return req


def _eval_fields(row) -> dict:
    """The evaluation protocol, starting from the Prune page's (the same keys), so an ablation is measured
    like the prune runs it is compared with; fields of `row` (ui.form_row)."""
    src = row.text_input(f("eval").label, help=f("eval").help, key=ui.persisted("pr_eval", f("eval").default),
                         width=ui.FIELD_PX)
    ui.keep("pr_eval")
    seqlen = row.number_input(f("eval_seqlen").label, f("eval_seqlen").lo, MAX_SEQLEN, step=64,
                              key=ui.persisted("pr_eval_seqlen", f("eval_seqlen").default), help=f("eval_seqlen").help,
                              width=ui.FIELD_PX)
    ui.keep("pr_eval_seqlen")
    windows = row.number_input(f("eval_windows").label, 0, 100_000, placeholder=ui.AUTO_WINDOWS,
                               key=ui.persisted("pr_eval_windows", f("eval_windows").default),
                               help=ui.AUTO_WINDOWS_HELP, width=ui.FIELD_PX)
    ui.keep("pr_eval_windows")
    return dict(eval=str(src).strip(), eval_seqlen=int(seqlen), eval_windows=None if windows is None else int(windows))


def panel(entry, quantile: float | None, tf_threshold: float | None, idf_threshold: float | None,
          dead: bool) -> None:
    """The ablation form for the page's current thresholds, and the chart of the followed run."""
    st.subheader("What each role is worth: ablation")
    st.caption("Zero every neuron of a class (its gate and up rows, its down column) and measure perplexity, "
               "against random sets with the same number of neurons in every layer. The classes use the "
               "thresholds above" + (" (the |W| split is not used here)" if st.session_state.get("role_split") else "")
               + ".")
    with st.container(border=True):
        choices = [c for c in ablation.CLASSES if dead or c != ablation.CLASSES[-1]]
        # the classes on a row of their own, their chips wrapping: in a column of [3, 1, 2] the five chips
        # scrolled sideways and "dead" was cut at 1440 px
        classes = st.multiselect(f("classes").label, choices, default=choices, key="abl_classes", wrap=True)
        row = ui.form_row()
        controls = row.number_input(f("controls").label, f("controls").lo, f("controls").hi, f("controls").default,
                                    key="abl_controls", help=f("controls").help, width=ui.FIELD_PX)
        bands = row.text_input(f("layers").label, key="abl_layers", placeholder="all, or 0-9,10-19",
                               help=f("layers").help, width=ui.FIELD_PX)
        values = dict(classes=",".join(classes) or ablation.NO_CLASS, controls=int(controls),
                      layers=bands.strip() or None, **_eval_fields(row))
        if quantile is not None:
            values["quantile"] = float(quantile)
        else:
            values.update(tf_threshold=float(tf_threshold), idf_threshold=float(idf_threshold))
        req, problem = None, None
        if not classes:
            problem = "Choose at least one class."
        else:
            try:
                req = _request(entry, **values)
            except UserError as e:
                problem = app_message(e)
        if problem:
            st.warning(plain(problem))
        else:
            st.caption(f"Cost: {view.cost_text(req)}.")
        if st.button("Run ablation", type="primary", disabled=req is None, key="abl_start"):
            with ui.user_errors():
                st.query_params[PARAM] = str(jobs.submit("ablate", req))
    ui.follow_run("ablate", _show, param=PARAM, stop="Cancel ablation")


def neuron_button(entry, layer: int, neuron: int) -> None:
    """Queue one neuron's ablation under the Prune page's evaluation protocol; the result appears in the
    ablation panel below (the same followed run)."""
    if st.button(f"Zero neuron {layer}:{neuron} → Δppl", key="abl_neuron",
                 help="One perplexity evaluation with this neuron removed (and the dense one unless it is cached), "
                      "under the Prune page's evaluation settings; the result appears in the ablation panel below."):
        with ui.user_errors():
            req = _request(entry, classes=ablation.NO_CLASS, controls=0, neurons=f"{layer}:{neuron}",
                           eval=str(st.session_state.get("pr_eval") or f("eval").default).strip(),
                           eval_seqlen=int(st.session_state.get("pr_eval_seqlen") or f("eval_seqlen").default),
                           eval_windows=st.session_state.get("pr_eval_windows"))
            st.query_params[PARAM] = str(jobs.submit("ablate", req))
            st.rerun()


def figure(result: dict) -> go.Figure:
    """Perplexity with each class zeroed (bars, value on each) beside its random controls (mean ± sd, each
    control a dot), dense as a line; a log axis (a critical class sits orders of magnitude above chance)."""
    table = view.class_table(result)
    names = [c if b is None or len(set(table["layers"])) == 1 else f"{c}<br>layers {b}"
             for c, b in zip(table["class"], table["layers"])]
    names = [f"{n}<br>({k:,} neurons)" for n, k in zip(names, table["neurons"])]
    fig = go.Figure()
    fig.add_bar(x=names, y=table["ppl"].tolist(), name="class zeroed", marker_color=CLASS_COLOUR,
                text=[ui.fmt_ppl(v) for v in table["ppl"]], textposition="outside", textfont_size=16,
                hovertemplate="%{x}<br>ppl %{y:.4g}<extra>class zeroed</extra>", offsetgroup="c")
    fig.add_bar(x=names, y=table["random_mean"].tolist(), name="random sets (mean ± sd)", marker_color=CONTROL_COLOUR,
                error_y=dict(type="data", array=table["random_std"].fillna(0).tolist(), thickness=2),
                text=[ui.fmt_ppl(v) for v in table["random_mean"]], textposition="outside", textfont_size=16,
                hovertemplate="%{x}<br>random mean %{y:.4g}<extra>random sets</extra>", offsetgroup="r")
    dots_x, dots_y = [], []
    for name, c in zip(names, result.get("classes", [])):
        for v in c.get("random_ppl") or []:
            if v is not None:
                dots_x.append(name)
                dots_y.append(v)
    if dots_x:
        fig.add_scatter(x=dots_x, y=dots_y, mode="markers", name="each random set", offsetgroup="r",
                        marker=dict(size=9, color="#222", symbol="circle-open"),
                        hovertemplate="%{x}<br>random set ppl %{y:.4g}<extra></extra>")
    values = [v for v in [*table["ppl"], *table["random_mean"], *dots_y] if v is not None and np.isfinite(v)]
    dense = result.get("dense_ppl")
    if dense is not None:
        values.append(dense)
        ui.reference_line(fig, dense, f"dense {ui.fmt_ppl(dense)}", log=True, color=DENSE_COLOUR)
    ui.log_axis(fig, values or [1.0], "y")
    fig.update_layout(barmode="group", title="Perplexity with each role zeroed, against random sets of its size",
                      yaxis_title="perplexity (log)", height=520, legend=dict(orientation="h", y=-0.25), **ROOM)
    fig.update_xaxes(tickfont_size=16)
    fig.update_yaxes(tickfont_size=16, title_font_size=18)
    return fig


def _show(run: dict | None) -> None:
    if run is None or run["status"] in ui.ACTIVE:
        return
    if run["status"] == "failed":
        st.error(f"Ablation {run['id']} failed: {plain(run['error'])}")
        return
    if run["status"] == "cancelled":
        st.warning(f"Ablation {run['id']} was cancelled.")
        return
    result = run["result"]
    st.markdown(f"**Ablation {run['id']}**")
    if result.get("classes"):
        ui.chart(figure(result), f"ablation_run{run['id']}", key=f"abl_chart_{run['id']}")
        table = view.class_table(result)
        ui.table(table, f"ablation_run{run['id']}", hide_index=True)
    neurons = view.neuron_table(result)
    if not neurons.empty:
        st.markdown("**Single neurons**")
        for _, n in neurons.iterrows():
            delta = n["delta_ppl"]
            st.metric(f"layer {int(n['layer'])}, neuron {int(n['neuron'])} zeroed", ui.fmt_ppl(n["ppl"]),
                      delta=None if delta is None or not np.isfinite(delta) else f"{delta:+.4f} vs dense",
                      delta_color="inverse")
    st.caption(plain(view.protocol_text(result)))
