"""Roles: the component interpretation matrix (TF high/low × IDF high/low, optionally × |W|), a TF-vs-IDF
scatter, and one neuron's numbers with its top-activating contexts."""

import numpy as np
import plotly.graph_objects as go
import streamlit as st

import ui
from neuronrank import UserError, scoring, views

ui.page_setup()
st.title("Roles")
st.caption("High = strictly above the threshold. " + " · ".join(f"**{r}**: {t}" for r, t in scoring.ROLE_TEXT.items()))

entry, data = ui.require_entry()
arrays = ui.neuron_arrays(entry.key, entry.created)

# ----------------------------------------------------------------------------------------------
# thresholds and the matrix

c1, c2, c3 = st.columns([2, 1, 1])
mode = c1.radio("Thresholds", ["per-layer median", "global value"], horizontal=True, key="role_mode")
split_w = c2.checkbox("split by |W|", key="role_split")
as_percent = c3.radio("Heatmap shows", ["%", "counts"], horizontal=True, key="role_heat") == "%"
thresholds = {"tf": None, "idf": None, "w_norm": None}
if mode == "global value":
    medians = views.global_medians(arrays)
    t1, t2, t3 = st.columns(3)
    # keys carry the entry: another entry starts from its own medians
    thresholds["tf"] = t1.number_input("TF threshold", value=medians["tf"], min_value=0.0, format="%.6g",
                                       key=f"thr_tf_{entry.key}")
    thresholds["idf"] = t2.number_input("IDF threshold", value=medians["idf"], min_value=0.0, format="%.6g",
                                        key=f"thr_idf_{entry.key}")
    if split_w:
        thresholds["w_norm"] = t3.number_input("|W| threshold", value=medians["w_norm"], min_value=0.0,
                                               format="%.6g", key=f"thr_w_{entry.key}")

rt = views.role_tables(arrays, thresholds["tf"], thresholds["idf"], thresholds["w_norm"], split_w)

z = rt.percent if as_percent else rt.counts
fig = go.Figure(go.Heatmap(
    z=z.to_numpy().tolist(), x=list(z.columns), y=[int(i) for i in z.index], colorscale="Blues",
    text=rt.counts.to_numpy().tolist(), texttemplate="%{text}",
    customdata=rt.percent.round(1).to_numpy().tolist(),
    hovertemplate="layer %{y}<br>%{x}<br>%{text} neurons (%{customdata}%)<extra></extra>",
    colorbar_title="% of layer" if as_percent else "neurons"))
fig.update_layout(title="Roles per layer (cell text: neurons)", xaxis_title="role", yaxis_title="layer",
                  yaxis_autorange="reversed", height=max(350, 22 * data.n_layers + 120))
ui.chart(fig, "roles_per_layer")

c1, c2 = st.columns([2, 3])
with c1:
    st.markdown("**All layers: neurons per cell**")
    ui.table(rt.overall.rename_axis("TF").reset_index(), "roles_overall", hide_index=True)
with c2:
    st.markdown("**All layers: roles**")
    ui.table(rt.summary, "roles_summary", hide_index=True, column_config={
        "percent": st.column_config.NumberColumn("%", format="%.1f")})
with st.expander("Counts per layer"):
    ui.table(rt.counts.reset_index(), "roles_counts_per_layer", hide_index=True)

# ----------------------------------------------------------------------------------------------
# TF vs IDF

st.subheader("TF vs IDF")
n = len(arrays["tf"])
sample = views.scatter_sample(n)
log_tf = st.checkbox("log TF axis", value=True, key="scatter_log")
shown = sample[arrays["tf"][sample] > 0] if log_tf else sample  # TF = 0 has no place on a log axis
fig = go.Figure(go.Scattergl(
    x=arrays["tf"][shown], y=arrays["idf"][shown], mode="markers",
    marker=dict(size=4, color=arrays["w_norm"][shown], colorscale="Viridis", colorbar=dict(title="|W|"),
                opacity=0.7),
    customdata=np.stack([arrays["layer"][shown], arrays["neuron"][shown], arrays["w_norm"][shown]], axis=1),
    hovertemplate="layer %{customdata[0]}, neuron %{customdata[1]}<br>TF %{x:.4g}<br>IDF %{y:.4g}"
                  "<br>|W| %{customdata[2]:.4g}<extra></extra>"))
note = f"{len(sample):,} of {n:,} neurons (fixed random sample)" if len(sample) < n else f"all {n:,} neurons"
if len(shown) < len(sample):
    note += f"; {len(sample) - len(shown):,} with TF = 0 not shown on the log axis"
fig.update_layout(title=f"TF vs IDF, coloured by |W| ({note}); click a point to inspect it",
                  xaxis_title="TF (mean |activation|)", yaxis_title="IDF", xaxis_type="log" if log_tf else "linear",
                  height=520)
event = ui.chart(fig, "tf_vs_idf", key=f"scatter_{entry.key}", on_select="rerun", selection_mode="points")

# a clicked point sets the neuron inputs below (once per new click, so typing still works)
points = event.selection.points if event is not None else []
if points:
    pt = points[0]
    if pt.get("customdata"):
        picked = (int(pt["customdata"][0]), int(pt["customdata"][1]))
    else:
        row = int(shown[pt["point_index"]])
        picked = (int(arrays["layer"][row]), int(arrays["neuron"][row]))
    if st.session_state.get("_pick_from_chart") != picked:
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
ex = ui.exponents()
with ui.user_errors():
    score = scoring.score({k: arrays[k][row:row + 1] for k in ("w_norm", "tf", "idf")},
                          ex["alpha"], ex["beta"], ex["gamma"])[0]
    tokens = int(data.frame["tokens"].iat[row])
    m = st.columns(6)
    m[0].metric("TF", f"{arrays['tf'][row]:.4g}")
    m[1].metric("IDF", f"{arrays['idf'][row]:.4g}")
    m[2].metric("|W|", f"{arrays['w_norm'][row]:.4g}")
    m[3].metric("active on", f"{arrays['n_active'][row] / max(tokens, 1):.1%}",
                help=f"{int(arrays['n_active'][row]):,} of {tokens:,} tokens")
    m[4].metric(f"score (α={ex['alpha']:g}, β={ex['beta']:g}, γ={ex['gamma']:g})", f"{score:.4g}")
    m[5].metric("role", str(rt.labels[row]))

    st.markdown("**Top-activating contexts** (one per calibration window, ±12 tokens, firing token in bold)")
    contexts = views.top_contexts(data, layer, neuron)
    if data.windows is None:
        st.info("This entry kept no calibration tokens, so there are no contexts to show.")
    elif not contexts:
        st.info("No contexts recorded for this neuron.")
    else:
        try:
            tok = ui.tokenizer(str(entry.params.get("model")))
        except UserError as e:
            tok = None
            st.warning(f"{e}; showing token ids.")
        for c in contexts:
            text = views.context_markdown(tok, c) if tok is not None else \
                " ".join(f"**{t}**" if i == c.at else str(t) for i, t in enumerate(c.ids))
            st.markdown(f"`{c.value:+.3f}` · window {c.window}, position {c.pos}: {text}")
