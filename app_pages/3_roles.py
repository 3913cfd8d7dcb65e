"""Roles: the component interpretation matrix (TF high/low × IDF high/low, optionally × |W|, plus a class
for dead neurons), a TF-vs-IDF scatter, and one neuron's numbers with its top-activating contexts."""

import numpy as np
import plotly.graph_objects as go
import streamlit as st

import ablation_panel
import ui
from neuronrank import UserError
from neuronrank.analysis import scoring
from neuronrank.views import unembed
from neuronrank.views import roles
from neuronrank.views.display import code, plain


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

# ----------------------------------------------------------------------------------------------
# thresholds and the matrix

c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
mode = c1.radio("Thresholds", ["per-layer quantile", "global value"], horizontal=True, key="role_mode",
                help="per-layer quantile: 'high' = above the layer's own quantile (0.5 = the median); global value: "
                     "one number for every layer")
split_w = c2.checkbox("split by |W|", key="role_split")
dead_class = c3.checkbox("'dead' class", value=True, key="role_dead",
                         help=f"neurons active (a > 0) on fewer than {scoring.DEAD_BELOW:.1%} of the tokens get "
                              "their own class instead of a TF/IDF cell")
as_percent = c4.radio("Heatmap shows", ["%", "counts"], horizontal=True, key="role_heat") == "%"
thresholds = {"tf": None, "idf": None, "w_norm": None}
quantile = None
if mode == "global value":
    medians = roles.global_medians(arrays)
    t1, t2, t3 = st.columns(3)
    # keys carry the entry: another entry starts from its own medians
    thresholds["tf"] = t1.number_input("TF threshold", value=medians["tf"], min_value=0.0, format="%.6g",
                                       key=f"thr_tf_{entry.key}")
    thresholds["idf"] = t2.number_input("IDF threshold", value=medians["idf"], min_value=0.0, format="%.6g",
                                        key=f"thr_idf_{entry.key}")
    if split_w:
        thresholds["w_norm"] = t3.number_input("|W| threshold", value=medians["w_norm"], min_value=0.0,
                                               format="%.6g", key=f"thr_w_{entry.key}")
else:
    quantile = st.select_slider("'High' means above this quantile of the layer", [0.5, 0.75, 0.8, 0.9, 0.95, 0.99],
                                value=0.9, key="role_quantile", format_func=lambda q: "median" if q == 0.5 else
                                f"{q:g} (top {1 - q:.0%})")
    st.caption(
        "With per-layer quantile thresholds every layer has the same number of 'high TF' and of 'high IDF' "
        "neurons, so each layer's matrix has one degree of freedom: the *critical* count fixes the rest "
        "(*important* = *moderate*" + (", and at the median *critical* = *prune-first*" if quantile == 0.5 else "")
        + "). The informative number is how far *critical* is from chance — see the chart below the tables. "
        "Global values give the matrix all its freedom.")

rt = roles.role_tables(arrays, thresholds["tf"], thresholds["idf"], thresholds["w_norm"], split_w,
                       quantile=quantile, dead_below=scoring.DEAD_BELOW if dead_class else None)

st.caption("High = strictly above the threshold. " + " · ".join(
    f"**{r}**: {t}" for r, t in scoring.ROLE_TEXT.items() if dead_class or r != scoring.DEAD))

z = rt.percent if as_percent else rt.counts
fig = go.Figure(go.Heatmap(
    z=z.to_numpy().tolist(), x=list(z.columns), y=[int(i) for i in z.index], colorscale="Blues",
    text=rt.counts.to_numpy().tolist(), texttemplate="%{text}",
    customdata=rt.percent.round(1).to_numpy().tolist(),
    hovertemplate="layer %{y}<br>%{x}<br>%{text} neurons (%{customdata}%)<extra></extra>",
    colorbar_title="% of layer" if as_percent else "neurons"))
fig.update_layout(title="Roles per layer (cell text: neurons)", xaxis_title="role", yaxis_title="layer",
                  yaxis_autorange="reversed", height=max(380, 22 * data.n_layers + 170),
                  xaxis=dict(side="top", tickangle=0, automargin=True), margin=dict(t=110))
ui.chart(fig, "roles_per_layer")

c1, c2 = st.columns([2, 3])
with c1:
    st.markdown("**All layers: neurons per cell**" + (f" ({rt.dead:,} dead neurons apart)" if rt.dead else ""))
    ui.table(rt.overall.rename_axis("TF").reset_index(), "roles_overall", hide_index=True)
with c2:
    st.markdown("**All layers: roles**")
    ui.table(rt.summary, "roles_summary", hide_index=True, column_config={
        "percent": st.column_config.NumberColumn("%", format="%.1f"),
        "meaning": st.column_config.TextColumn("meaning", width="large")})
with st.expander("Counts per layer"):
    ui.table(rt.counts.reset_index(), "roles_counts_per_layer", hide_index=True)

if quantile is not None:
    chance = roles.critical_vs_chance(rt, quantile)
    fig = go.Figure([go.Bar(x=chance["layer"].tolist(), y=chance["observed"].tolist(), name="observed"),
                     go.Scatter(x=chance["layer"].tolist(), y=chance["expected"].tolist(), mode="lines",
                                name="if TF and IDF were independent", line=dict(dash="dash"))])
    fig.update_layout(title=f"Critical neurons (top {1 - quantile:.0%} in both TF and IDF) per layer vs chance",
                      xaxis_title="layer", yaxis_title="% of the layer", yaxis_ticksuffix="%", height=360)
    ui.chart(fig, "critical_vs_chance")

# dead neurons and the score: where the original score protects them
ex = ui.exponents()
first_only = roles.first_position_only(data, arrays)
with ui.user_errors():
    all_scores = scoring.score(arrays, ex["alpha"], ex["beta"], ex["gamma"])
    n_dead, n_never, kept = roles.dead_kept(arrays, all_scores, ex["sparsity"])
    if n_dead:
        st.markdown(
            f"**Dead neurons.** {n_dead:,} neurons are active on fewer than {scoring.DEAD_BELOW:.1%} of the tokens "
            f"({n_never:,} never). Their IDF is maximal and their TF counts only "
            "small negative SiLU values, so a TF/IDF split files them under *critical* or *moderate*. "
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
# TF vs IDF

st.subheader("TF vs IDF")
n = len(arrays["tf"])
sample = roles.scatter_sample(n)
log_tf = st.checkbox("log TF axis", value=True, key="scatter_log")
shown = sample[arrays["tf"][sample] > 0] if log_tf else sample  # TF = 0 has no place on a log axis
fig = go.Figure(go.Scattergl(
    x=arrays["tf"][shown], y=arrays["idf"][shown], mode="markers",
    marker=dict(size=5, color=arrays["w_norm"][shown], colorscale="Viridis", colorbar=dict(title="|W|"),
                opacity=0.7),
    customdata=np.stack([arrays["layer"][shown], arrays["neuron"][shown], arrays["w_norm"][shown]], axis=1),
    hovertemplate="layer %{customdata[0]}, neuron %{customdata[1]}<br>TF %{x:.4g}<br>IDF %{y:.4g}"
                  "<br>|W| %{customdata[2]:.4g}<extra></extra>"))
note = f"{len(sample):,} of {n:,} neurons (fixed random sample)" if len(sample) < n else f"all {n:,} neurons"
if len(shown) < len(sample):
    note += f"; {len(sample) - len(shown):,} with TF = 0 not shown on the log axis"
fig.update_layout(title=f"TF vs IDF, coloured by |W| ({note}); click a point to inspect it",
                  xaxis_title="TF (mean |activation|)", yaxis_title="IDF", height=520)
if log_tf:
    ui.log_axis(fig, arrays["tf"][shown], "x")
event = ui.chart(fig, "tf_vs_idf", key=f"scatter_{entry.key}", on_select="rerun", selection_mode="points")

# a clicked point sets the neuron inputs below (once per new click, so typing still works)
points = event.selection.points if event is not None else []
if points:
    picked = roles.picked_neuron(points[0], shown, arrays)
    if picked is not None and st.session_state.get("_pick_from_chart") != picked:
        st.session_state["_pick_from_chart"] = picked
        st.session_state["_pick_layer"], st.session_state["_pick_neuron"] = picked

# ----------------------------------------------------------------------------------------------
# one neuron

st.subheader("One neuron")
for name, top in (("_pick_layer", data.n_layers - 1), ("_pick_neuron", data.width - 1)):
    if not 0 <= st.session_state.get(name, 0) <= top:  # picked in an entry of another shape
        st.session_state[name] = 0
c1, c2 = st.columns(2)
layer = int(c1.number_input("layer", 0, data.n_layers - 1, key="_pick_layer"))
neuron = int(c2.number_input("neuron", 0, data.width - 1, key="_pick_neuron"))
row = layer * data.width + neuron  # the frame is layer-major
with ui.user_errors():
    score = float(all_scores[row])
    tokens = int(arrays["tokens"][row])
    m = st.columns(6)
    m[0].metric("TF", f"{arrays['tf'][row]:.4g}")
    m[1].metric("IDF", f"{arrays['idf'][row]:.4g}")
    m[2].metric("|W|", f"{arrays['w_norm'][row]:.4g}")
    m[3].metric("active on", f"{arrays['n_active'][row] / max(tokens, 1):.1%}",
                help=f"{int(arrays['n_active'][row]):,} of {tokens:,} tokens")
    m[4].metric(f"score (α={ex['alpha']:g}, β={ex['beta']:g}, γ={ex['gamma']:g})", f"{score:.4g}")
    m[5].metric("role", str(rt.labels[row]))
    if first_only[row]:
        st.warning("This neuron fires only at the first position of a window (an attention-sink neuron).")
    ablation_panel.neuron_button(entry, layer, neuron)

    ctx_col, logit_col = st.columns([3, 1])
    with logit_col:
        _promoted_tokens(str(entry.params.get("model")), layer, neuron)
    ctx_col.markdown("**Top-activating contexts** (one per calibration window, ±12 tokens, firing token marked)")
    contexts = roles.top_contexts(data, layer, neuron)
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

# ----------------------------------------------------------------------------------------------
# what each role is worth

st.divider()
ablation_panel.panel(entry, quantile, thresholds["tf"], thresholds["idf"], dead_class)
