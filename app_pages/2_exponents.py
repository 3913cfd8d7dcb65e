"""Exponents: score = |W|^α × TF^β × IDF^γ, live. A slider move rescores cached arrays only."""

import plotly.graph_objects as go
import streamlit as st

import ui
from neuronrank.views import explorer

ui.page_setup()
st.title("Exponents")
st.markdown("**score = |W|^α × TF^β × IDF^γ** — move an exponent and every neuron is rescored from the cached "
            "statistics. An exponent of 0 switches its factor off.")
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
        "structured prune would remove.")

entry, data = ui.require_entry()
arrays = ui.neuron_arrays(entry.key, entry.created)

ui.init_exponent_widgets()
cols = st.columns(len(explorer.PRESETS))
for col, (name, preset) in zip(cols, explorer.PRESETS.items()):
    a, b, g, sp = preset
    col.button(name, key=f"preset_{name}", on_click=ui.apply_preset, args=preset, width="stretch",
               help=f"α = {a:g}, β = {b:g}, γ = {g:g}" + (f"; sparsity {sp:.0%}" if sp is not None else ""))


# A fragment: moving a slider reruns only this part (sliders, charts, tables), not the page around it
# nor the sidebar. The preset buttons above rerun the whole page, which redraws the sliders.
@st.fragment
def explore() -> None:
    c1, c2, c3, c4 = st.columns(4)
    c1.slider("α (|W| exponent)", 0.0, 3.0, step=0.1, key="_alpha")
    c2.slider("β (TF exponent)", 0.0, 3.0, step=0.1, key="_beta")
    c3.slider("γ (IDF exponent)", 0.0, 3.0, step=0.1, key="_gamma")
    c4.slider("sparsity (fraction pruned)", 0.0, 0.95, step=0.05, key="_sparsity")
    chosen = ui.keep_exponents()  # also stored as st.session_state alpha/beta/gamma/sparsity for later pages
    alpha, beta, gamma, sparsity = (chosen[k] for k in ("alpha", "beta", "gamma", "sparsity"))

    with ui.user_errors():
        c1, c2 = st.columns([1, 3])
        log_x = c1.checkbox("log x (log₁₀ score)", value=True, key="hist_log")
        if st.session_state.get("hist_layer", 0) >= data.n_layers:  # chosen in an entry with more layers
            st.session_state["hist_layer"] = 0
        layer = c2.selectbox("Layer", list(range(data.n_layers)), key="hist_layer")
        scores, overall, one_layer = explorer.score_histograms(arrays, alpha, beta, gamma, layer=layer, log=log_x)

        h1, h2 = st.columns(2)
        layer_scores = scores[explorer.layer_slice(arrays["layer"], layer)]
        cut = f"{sparsity:.0%} pruned below"
        with h1:
            ui.chart(ui.hist_figure(overall, f"Scores, all {overall.total:,} neurons",
                                    explorer.prune_threshold(scores, sparsity, log_x), f"global cut: {cut}"),
                     "score_histogram")
        with h2:
            ui.chart(ui.hist_figure(one_layer, f"Scores, layer {layer}",
                                    explorer.prune_threshold(layer_scores, sparsity, log_x), f"layer cut: {cut}"),
                     f"score_histogram_layer{layer}")

        # --- global vs per-layer threshold ------------------------------------------------------
        st.subheader(f"Which layers lose neurons at {sparsity:.0%} sparsity")
        frac = explorer.pruned_fraction(scores, arrays["layer"], sparsity)
        fig = go.Figure([
            go.Bar(x=frac["layer"].tolist(), y=frac["global"].tolist(), name="one global threshold"),
            go.Scatter(x=frac["layer"].tolist(), y=frac["per_layer"].tolist(), name="a threshold per layer",
                       mode="lines+markers"),
        ])
        fig.update_layout(xaxis_title="layer", yaxis_title="fraction of the layer's neurons pruned",
                          yaxis_tickformat=".0%", title="Pruned fraction per layer: global vs per-layer threshold")
        ui.chart(fig, "pruned_fraction_per_layer")

        # --- agreement with the baselines -------------------------------------------------------
        st.subheader("Overlap with magnitude and Wanda rankings")
        st.caption(explorer.BASELINE_NOTE)
        grouping = st.radio("Compare pruned sets chosen", ["per layer", "globally"], horizontal=True,
                            key="overlap_grouping",
                            help="per layer: the lowest fraction of each layer (structured pruning); globally: the "
                                 "lowest fraction of the whole model")
        summary, per_layer = explorer.ranking_overlap(scores, arrays, sparsity, per_layer=grouping == "per layer")
        mcols = st.columns(len(summary))
        for mc, row in zip(mcols, summary.itertuples()):
            mc.metric(f"Jaccard with {row.baseline}", f"{row.jaccard:.3f}",
                      help=f"{row.shared:,} of {row.pruned:,} pruned neurons shared")
        fig = go.Figure([go.Scatter(x=per_layer["layer"].tolist(), y=per_layer[name].tolist(), name=label,
                                    mode="lines+markers") for name, label in explorer.BASELINES.items()])
        fig.update_layout(xaxis_title="layer", yaxis_title="Jaccard overlap", yaxis_range=[0, 1.02],
                          title="Overlap of the pruned sets per layer")
        ui.chart(fig, "overlap_per_layer")
        ui.table(per_layer.rename(columns={k: f"jaccard_{k}" for k in explorer.BASELINES}), "overlap_per_layer",
                 hide_index=True)

        # --- the lowest-scoring neurons ----------------------------------------------------------
        st.subheader(f"The {explorer.LOWEST_N} lowest-scoring neurons")
        ui.table(explorer.lowest_neurons(arrays, scores), "lowest_neurons", hide_index=True)


explore()
