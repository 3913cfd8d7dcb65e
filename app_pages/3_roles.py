"""Roles: the component interpretation matrix (TF high/low × IDF high/low, optionally × |W|, plus a class
for dead neurons), a TF-vs-IDF scatter of every neuron, and one neuron's numbers with its recorded contexts.
Every control is in the URL: a link restores the view, and a neuron has its own link (?neuron=11:1072)."""

import numpy as np
import plotly.graph_objects as go
import streamlit as st

import ablation_panel
import ui
from components.scatter import scatter
from neuronrank import UserError
from neuronrank.analysis import scoring
from neuronrank.views import roles, unembed
from neuronrank.views.display import URL_QUANTILES, code, plain


def _promoted_tokens(model: str, layer: int, neuron: int) -> None:
    """Tokens the neuron promotes / suppresses: W_U · (final norm ⊙ its down_proj column)."""
    st.markdown("**Tokens it promotes / suppresses**", help=unembed.__doc__.split("\n\n")[1])
    try:
        effects = _neuron_tokens(model, layer, neuron)
        tok = ui.tokenizer(model)
    except UserError as e:
        st.info(plain(e))
        return
    show = lambda pairs: " · ".join(f"{code(repr(tok.decode([i])))} {v:+.2f}" for i, v in pairs)  # noqa: E731
    st.markdown("▲ " + show(effects["promoted"]))
    st.markdown("▼ " + show(effects["suppressed"]))


@st.cache_data(show_spinner=False, max_entries=256)
def _neuron_tokens(model: str, layer: int, neuron: int) -> dict:
    return unembed.load(model).neuron_tokens(layer, neuron, k=8)


ui.page_setup()
st.title("Roles")

entry, data = ui.require_entry()
arrays = ui.neuron_arrays(entry.key, entry.created)
medians = roles.global_medians(arrays)
MODES = {"quantile": "per-layer quantile", "value": "global value"}
CELLS = {"counts": "counts", "percent": "%"}
THRESHOLDS = {"tf": "TF threshold", "idf": "IDF threshold", "w": "|W| threshold"}
MEDIAN_OF = {"tf": "tf", "idf": "idf", "w": "w_norm"}

# ----------------------------------------------------------------------------------------------
# the view: every control in the URL (views.display.url_value checks each value); widget state outlives a
# visit to another page (ui.persisted: the plain key keeps a copy)

DEFAULTS = {"role_mode": MODES["quantile"], "role_quantile": 0.9, "role_split": False, "role_dead": True,
            "role_heat": CELLS["counts"], "scatter_log": True, "pick_layer": 0, "pick_neuron": 0,
            **{f"thr_{k}_{entry.key}": medians[MEDIAN_OF[k]] for k in THRESHOLDS}}
widget = {name: ui.persisted(name, default) for name, default in DEFAULTS.items()}  # name -> widget key


def _set(name: str, value) -> None:
    st.session_state[name] = st.session_state[f"_{name}"] = value


def _from_url(name: str, value) -> str | None:
    if name == "neuron":
        layer, neuron = value
        if layer >= data.n_layers or neuron >= data.width:
            return (f"The link's neuron={layer}:{neuron} is not in this entry ({data.n_layers} layers × "
                    f"{data.width:,} neurons); it was ignored.")
        _set("pick_layer", layer)
        _set("pick_neuron", neuron)
    elif name in THRESHOLDS:
        _set(f"thr_{name}_{entry.key}", value)
    else:
        key, conv = {"thresholds": ("role_mode", MODES.get), "q": ("role_quantile", float),
                     "split": ("role_split", bool), "dead": ("role_dead", bool), "cells": ("role_heat", CELLS.get),
                     "logtf": ("scatter_log", bool)}[name]
        _set(key, conv(value))
    return None


ui.restore_page_url("roles", ("thresholds", "q", *THRESHOLDS, "split", "dead", "cells", "logtf", "neuron"), _from_url)
for name, top in (("pick_layer", data.n_layers - 1), ("pick_neuron", data.width - 1)):
    if not 0 <= st.session_state[widget[name]] <= top:  # picked in an entry of another shape
        _set(name, 0)

# ----------------------------------------------------------------------------------------------
# thresholds and the matrix

st.markdown(
    "Each neuron gets a role from two numbers: **TF** (how strongly it fires on average) and **IDF** (how "
    "selective it is — high when it fires on few tokens). *High* means strictly above the threshold. "
    f"**Dead** (one definition everywhere): {scoring.DEAD_RULE}. {scoring.DEAD_WHY}")
with st.container(horizontal=True, gap="large"):  # wraps on a narrow screen instead of cutting labels
    mode = st.radio("Thresholds", list(MODES.values()), horizontal=True, key=widget["role_mode"], width="content",
                    help="per-layer quantile: 'high' = above the layer's own quantile (0.5 = the median); global "
                         "value: one number for every layer")
    cells = st.radio("Cells show", list(CELLS.values()), horizontal=True, key=widget["role_heat"], width="content")
    split_w = st.checkbox("split by |W|", key=widget["role_split"], width="content")
    dead_class = st.checkbox("dead class", key=widget["role_dead"], width="content",
                             help=f"dead neurons ({scoring.DEAD_RULE}) get their own class instead of a TF/IDF cell")
for name in ("role_mode", "role_split", "role_dead", "role_heat"):
    ui.keep(name)
thresholds = {"tf": None, "idf": None, "w": None}
quantile = None
if mode == MODES["value"]:
    cols = st.columns(3)
    for col, (k, label) in zip(cols, THRESHOLDS.items()):
        if k == "w" and not split_w:
            continue
        name = f"thr_{k}_{entry.key}"  # the key carries the entry: another entry starts from its own medians
        thresholds[k] = float(col.number_input(label, min_value=0.0, format="%.6g", key=widget[name],
                                               help=f"the whole model's median is {medians[MEDIAN_OF[k]]:.6g}"))
        ui.keep(name)
else:
    quantile = st.select_slider("'High' means above this quantile of the layer", list(URL_QUANTILES),
                                key=widget["role_quantile"], format_func=lambda q: "median" if q == 0.5 else
                                f"{q:g} (top {1 - q:.0%})")
    ui.keep("role_quantile")
    st.caption(
        "With per-layer quantile thresholds every layer has the same number of 'high TF' and of 'high IDF' "
        "neurons, so each layer's matrix has one degree of freedom: the *critical* count fixes the rest "
        "(*important* = *moderate*" + (", and at the median *critical* = *prune-first*" if quantile == 0.5 else "")
        + "). The informative number is how far *critical* is from chance — see the chart below the tables. "
        "Global values give the matrix all its freedom.")

rt = roles.role_tables(arrays, thresholds["tf"], thresholds["idf"], thresholds["w"], split_w,
                       quantile=quantile, dead_below=scoring.DEAD_BELOW if dead_class else None)

as_percent = cells == CELLS["percent"]
shown = rt.percent.round(1) if as_percent else rt.counts
colour = roles.column_colours(rt.percent)
columns = list(rt.counts.columns)
if split_w:  # two label rows: the role once over its pair of columns, then "high / low |W|" on two short lines
    # (nine one-row labels collide at a 1280 px projector with 150 % zoom: ~49 px per column)
    ticks = [[c.split(" / ")[0] for c in columns],
             [c.split(" / ")[1].replace(" ", "<br>") if " / " in c else " " for c in columns]]
else:
    ticks = columns
names = np.broadcast_to(np.array(columns, dtype=object), rt.counts.shape)
fig = go.Figure(go.Heatmap(
    z=colour.to_numpy().tolist(), x=ticks, y=[int(i) for i in rt.counts.index], colorscale="Blues", zmin=0, zmax=1,
    showscale=False, text=shown.to_numpy().tolist(), texttemplate="%{text}",
    customdata=np.dstack([names, rt.counts.to_numpy(), rt.percent.round(1).to_numpy()]).tolist(),
    hovertemplate="layer %{y}<br>%{customdata[0]}<br>%{customdata[1]} neurons (%{customdata[2]} % of the layer)"
                  "<extra></extra>",
    xgap=1, ygap=1))
fig.update_layout(
    height=max(440, 22 * data.n_layers + 160), margin=dict(t=20),
    # horizontal labels: nine of them fit side by side down to a 1280 px screen at 150 % zoom
    xaxis=dict(side="top", automargin=True, tickangle=0, tickfont=dict(size=12, color="#222")),
    yaxis=dict(title="layer", autorange="reversed", dtick=1 if data.n_layers <= 40 else None))
st.markdown(f"**Roles per layer** (cells: {'% of the layer' if as_percent else 'neurons'})")
ui.chart(fig, "roles_per_layer")
st.caption("Colour: each column on its own scale — white = the layer with its fewest neurons, dark = its most — so "
           "a small class's pattern shows beside prune-first's ~80 % of every layer. Hover a cell for its count and "
           "share of the layer.")

notes = roles.pattern_notes(rt, quantile)
if notes:
    lines = [f"- **{n.split(':', 1)[0]}**:{n.split(':', 1)[1]}" for n in notes]
    crit = rt.counts["critical"] if "critical" in rt.counts.columns else None
    if crit is not None and quantile is not None and (crit == 0).any() and crit.max() > 0:
        zero = crit.index[crit == 0]
        lines.insert(1, f"  - so in layer{'s' if len(zero) > 1 else ''} {roles.layer_ranges(zero)} no neuron is both "
                        f"among its layer's strongest (top {1 - quantile:.0%} TF) and most selective (top "
                        f"{1 - quantile:.0%} IDF): there, the neurons that fire strongly fire on most tokens.")
    st.markdown("**What the matrix shows**\n\n" + "\n".join(lines))

st.markdown("**All layers: neurons per cell**" + (f" ({rt.dead:,} dead neurons apart)" if rt.dead else ""))
overall = rt.overall.rename_axis("TF").reset_index()
st.table(overall.set_index("TF").map(lambda v: f"{int(v):,}"))
st.markdown("**All layers: roles**")
summary = rt.summary.assign(neurons=rt.summary["neurons"].map(lambda v: f"{v:,}"),
                            percent=rt.summary["percent"].map(lambda v: f"{v:.1f}")).rename(columns={"percent": "%"})
st.table(summary.set_index("role"))
with st.container(horizontal=True, gap="small"):
    for label, frame, name in (("Download CSV: neurons per cell", overall, "roles_overall"),
                               ("Download CSV: roles", rt.summary, "roles_summary"),
                               ("Download CSV: roles per layer", rt.counts.reset_index(), "roles_counts_per_layer")):
        st.download_button(label, frame.to_csv(index=False).encode(), file_name=f"{name}.csv", mime="text/csv",
                           on_click="ignore", key=f"csv_{name}")

if quantile is not None:
    chance = roles.critical_vs_chance(rt, quantile)
    fig = go.Figure([go.Bar(x=chance["layer"].tolist(), y=chance["observed"].tolist(), name="observed"),
                     go.Scatter(x=chance["layer"].tolist(), y=chance["expected"].tolist(), mode="lines",
                                name="if TF and IDF were independent", line=dict(dash="dash", width=3))])
    fig.update_layout(title=f"Critical neurons (top {1 - quantile:.0%} in both TF and IDF) per layer vs chance",
                      xaxis_title="layer", yaxis_title="% of the layer", yaxis_ticksuffix=" %", height=380,
                      legend=dict(orientation="h", y=-0.22, yanchor="top", x=0))
    ui.chart(fig, "critical_vs_chance")

# dead neurons and the score: where the original score protects them
ex = ui.exponents()
first_only = roles.first_position_only(data, arrays)
with ui.user_errors():
    all_scores = scoring.score(arrays, ex["alpha"], ex["beta"], ex["gamma"])
    n_dead, n_never, kept = roles.dead_kept(arrays, all_scores, ex["sparsity"])
    if n_dead:
        st.markdown(
            f"**Dead neurons.** {n_dead:,} neurons are dead — {scoring.DEAD_RULE} ({n_never:,} of them never). "
            "Their IDF is maximal and their TF counts only small negative activation values, so without the dead "
            "class a TF/IDF split files them under *critical* or *moderate*. "
            f"With the current exponents (α={ex['alpha']:g}, β={ex['beta']:g}, γ={ex['gamma']:g}) and "
            f"{ex['sparsity']:.0%} structured sparsity, **{kept:,} of them are kept**: γ > 0 lifts their score "
            "through the maximal IDF, which is where the original score protects neurons that do nothing.")
    if first_only.any():
        rows = np.flatnonzero(first_only)[:8]
        st.markdown(
            f"**First-position neurons.** {int(first_only.sum()):,} neurons fire only at position 0 of a window "
            "(attention-sink behaviour: the first token, whatever it is): "
            + ", ".join(f"L{arrays['layer'][r]}/{arrays['neuron'][r]}" for r in rows)
            + (" …" if first_only.sum() > len(rows) else "")
            + ". Their TF and IDF come from one token per window.")

# ----------------------------------------------------------------------------------------------
# TF vs IDF: every neuron, in the browser


def _picked(layer: int, neuron: int) -> None:  # a click on the scatter (a callback, before the rerun)
    _set("pick_layer", layer)
    _set("pick_neuron", neuron)


st.subheader("TF vs IDF")
log_tf = st.checkbox("log TF axis", key=widget["scatter_log"])
ui.keep("scatter_log")
pick = (int(st.session_state[widget["pick_layer"]]), int(st.session_state[widget["pick_neuron"]]))
scatter(entry.key, entry.created, arrays, data.n_layers, data.width, log=log_tf, picked=pick, on_pick=_picked,
        present=ui.presentation_mode())

# ----------------------------------------------------------------------------------------------
# one neuron

st.subheader("One neuron")
c1, c2 = st.columns(2)
layer = int(c1.number_input("layer", 0, data.n_layers - 1, key=widget["pick_layer"]))
neuron = int(c2.number_input("neuron", 0, data.width - 1, key=widget["pick_neuron"]))
ui.keep("pick_layer")
ui.keep("pick_neuron")
row = layer * data.width + neuron  # the frame is layer-major
st.caption(f"This neuron has its own link: the page's address now holds `neuron={layer}:{neuron}`.")
with ui.user_errors():
    score = float(all_scores[row])
    tokens = int(arrays["tokens"][row])
    n_active = int(arrays["n_active"][row])
    role = str(rt.labels[row])
    st.markdown(f"**Role: {role}** — " + (scoring.ROLE_TEXT.get(role.split(' / ')[0], '')) +
                (f"; {role.split(' / ')[1]}" if " / " in role else ""))
    with st.container(horizontal=True, gap="large"):  # metrics wrap instead of cutting their values
        st.metric("TF", f"{arrays['tf'][row]:.4g}", width="content")
        st.metric("IDF", f"{arrays['idf'][row]:.4g}", width="content")
        st.metric("|W|", f"{arrays['w_norm'][row]:.4g}", width="content")
        st.metric("active on", f"{n_active / max(tokens, 1):.2%}", width="content",
                  help=f"{n_active:,} of {tokens:,} tokens (a > 0)")
        st.metric("score", f"{score:.4g}", width="content",
                  help=f"α={ex['alpha']:g}, β={ex['beta']:g}, γ={ex['gamma']:g}")
    if first_only[row]:
        st.warning("This neuron fires only at the first position of a window (an attention-sink neuron).")
    ablation_panel.neuron_button(entry, layer, neuron)

    _promoted_tokens(str(entry.params.get("model")), layer, neuron)
    ctx_col = st.container()
    contexts = roles.top_contexts(data, layer, neuron)
    ctx_col.markdown(roles.contexts_heading(contexts, n_active))
    if data.windows is None:
        ctx_col.info("This entry kept no calibration tokens, so there are no contexts to show.")
    elif not contexts:
        ctx_col.info("No contexts recorded for this neuron.")
    else:
        try:
            tok = ui.tokenizer(str(entry.params.get("model")))
        except UserError as e:
            tok = None
            st.warning(f"{plain(e)}; showing token ids.")
        lines = []
        for c in contexts:
            text = roles.context_html(tok, c) if tok is not None else roles.ids_html(c)
            lines.append(f"<div class='nr-ctx'><code>{c.value:+.3f}</code> · window {c.window}, position {c.pos}: "
                         f"{text}</div>")
        ctx_col.html("<style>.nr-ctx{font-size:0.92rem;margin:0.15rem 0;white-space:pre-wrap}"
                     ".nr-ctx mark{background:#ffd54f;font-weight:600;padding:0 1px}</style>" + "".join(lines))

# the URL: what this page shows
value_mode = mode == MODES["value"]
ui.write_page_url({
    "thresholds": next(k for k, v in MODES.items() if v == mode),
    "q": None if value_mode else f"{quantile:g}",
    **{k: (repr(thresholds[k]) if value_mode and thresholds[k] is not None else None) for k in THRESHOLDS},
    "split": "1" if split_w else "0", "dead": "1" if dead_class else "0",
    "cells": next(k for k, v in CELLS.items() if v == cells), "logtf": "1" if log_tf else "0",
    "neuron": f"{layer}:{neuron}",
})

# ----------------------------------------------------------------------------------------------
# what each role is worth

st.divider()
ablation_panel.panel(entry, quantile, thresholds["tf"], thresholds["idf"], dead_class)
