"""Compare: two statistics entries of the same model side by side — how much the ranking, the pruned set and
the roles depend on the calibration text, the activation site, the seed or --skip-first."""

import numpy as np
import plotly.graph_objects as go
import streamlit as st

import ui
from neuronrank import UserError
from neuronrank.views import compare
from neuronrank.views.display import plain
from neuronrank.views.entries import entry_labels

ROOM = dict(font=dict(size=18), title_font_size=21, height=470)  # readable from the back of a room


def _chart(fig: go.Figure, name: str, height: int = ROOM["height"], layers: int | None = None, **kwargs):
    fig.update_layout(**{**ROOM, "height": height})
    fig.update_xaxes(tickfont_size=16, title_font_size=18)  # the app theme's ticks are too small for a room
    fig.update_yaxes(tickfont_size=16, title_font_size=18)
    if layers is not None:  # an x axis of layers: whole layers only
        fig.update_xaxes(dtick=1 if layers <= 16 else 5, tick0=0)
    return ui.chart(fig, name, **kwargs)


ui.page_setup()
st.title("Compare")
st.markdown("Two statistics entries of **the same model**, neuron by neuron: does the ranking depend on the "
            "calibration text, the activation site, the seed or the skipped first positions?")

cached = ui.safe_entries()
by_key = {e.key: e for e in cached}
if len(by_key) < 2:
    st.info("Compare needs two statistics entries of the same model: compute a second one on the **Statistics** "
            "page (another calibration text, site or seed).")
    st.stop()

key_a = st.session_state.get("entry_key") if st.session_state.get("entry_key") in by_key else cached[0].key
if not st.session_state.get("_entry2_restored"):  # once per browser session: entry B from a shared link
    st.session_state["_entry2_restored"] = True
    from_url = ui.url_param("entry2")
    if from_url is not None and from_url in by_key:
        st.session_state["entry2"] = from_url
    elif from_url is not None:
        st.warning(f"The link names statistics entry {plain(from_url)} for B, which is not in this cache.")
key_b = st.session_state.get("entry2")
if key_b not in by_key:  # the newest other entry of the same model, else the newest other one
    others = [e for e in cached if e.key != key_a]
    same = [e for e in others if e.params.get("model_identity") == by_key[key_a].params.get("model_identity")]
    key_b = (same or others)[0].key
st.session_state["entry2"] = key_b

# the pickers follow the state (set before they are drawn); a pick changes the state in its callback
for widget, key in (("_cmp_a", key_a), ("_cmp_b", key_b)):
    if st.session_state.get(widget) != key:
        st.session_state[widget] = key
c1, c2 = st.columns(2)
label = entry_labels(cached).get  # what tells the entries apart first
c1.selectbox("Entry A (the loaded entry)", list(by_key), key="_cmp_a", format_func=label,
             on_change=lambda: ui.select_entry(st.session_state["_cmp_a"]))
c2.selectbox("Entry B", list(by_key), key="_cmp_b", format_func=label,
             on_change=lambda: st.session_state.update(entry2=st.session_state["_cmp_b"]))
if st.query_params.get("entry2") != key_b:
    st.query_params["entry2"] = key_b

ea, eb = by_key[key_a], by_key[key_b]
try:
    compare.check_comparable(ea.params, eb.params, ea.manifest.get("shape"), eb.manifest.get("shape"))
except UserError as e:
    st.error(plain(e))
    st.stop()

with ui.user_errors():
    fa = ui.load_entry(ea.key, ea.created).frame
    fb = ui.load_entry(eb.key, eb.created).frame
    diff = compare.param_differences(ea.params, eb.params)
    if diff.empty:
        st.caption("Both entries have the same calibration settings" +
                   (" (it is one entry compared with itself)." if ea.key == eb.key else "."))
    else:
        st.markdown("**They differ in:** " + "; ".join(
            f"{plain(r.setting)}: {plain(r.A)} → {plain(r.B)}" for r in diff.itertuples()))

    ex = ui.exponents()
    a, b, g, sparsity = ex["alpha"], ex["beta"], ex["gamma"], ex["sparsity"]
    st.caption(f"Score at the Exponents page's α = {a:g}, β = {b:g}, γ = {g:g}; pruned sets at its sparsity "
               f"{sparsity:.0%} (lowest scores).")

    # rank correlation per layer
    corr = compare.rank_correlations(fa, fb, a, b, g)
    fig = go.Figure([go.Scatter(x=corr["layer"].tolist(), y=corr[c].tolist(), mode="lines+markers", name=name,
                                line=dict(width=3), marker=dict(size=8))
                     for c, name in (("tf", "TF"), ("idf", "IDF"), ("score", "score"))])
    fig.update_layout(title="Rank correlation of A and B per layer (Spearman ρ)", xaxis_title="layer",
                      yaxis_title="ρ", yaxis_range=[min(-0.05, float(np.nanmin(corr[["tf", "idf", "score"]]
                                                                               .to_numpy(), initial=0))), 1.02],
                      legend=dict(orientation="h", y=-0.2))
    _chart(fig, "rank_correlation_per_layer", layers=len(corr))

    # Jaccard of the pruned sets
    ov = compare.prune_overlap(fa, fb, a, b, g, sparsity)
    row = st.container(horizontal=True)  # wraps where the screen is narrow: three columns cut the numbers at 150 %
    m1, m2, m3 = (row.container(width=ui.METRIC_PX) for _ in range(3))
    m1.metric("Jaccard, per-layer cut (all layers)", f"{ov['all_layers']:.3f}",
              help="the lowest-scoring fraction of each layer in A and in B: |A ∩ B| / |A ∪ B| over all layers")
    m2.metric("Jaccard, one global cut", f"{ov['global']:.3f}",
              help="the lowest-scoring fraction of all neurons at once")
    per = ov["per_layer"]
    fig = go.Figure(go.Bar(x=per["layer"].tolist(), y=per["jaccard"].tolist(), name="per layer",
                           customdata=np.stack([per["shared"], per["pruned"]], axis=1).tolist(),
                           hovertemplate="layer %{x}<br>Jaccard %{y:.3f}<br>%{customdata[0]} of %{customdata[1]} "
                                         "pruned neurons shared<extra></extra>"))
    fig.update_layout(title=f"Jaccard overlap of the neurons A and B would prune at {sparsity:.0%}, per layer",
                      xaxis_title="layer", yaxis_title="Jaccard", yaxis_range=[0, 1.02], showlegend=False)
    if sparsity > 0:
        ui.reference_line(fig, compare.chance_jaccard(sparsity), "unrelated rankings", log=False)
    _chart(fig, "pruned_overlap_per_layer", layers=len(per))

    # roles: a transition matrix
    quantile = st.select_slider("Roles: 'high' means above this quantile of the layer", [0.5, 0.75, 0.8, 0.9, 0.95],
                                value=0.9, key="cmp_quantile",
                                format_func=lambda q: "median" if q == 0.5 else f"{q:g} (top {1 - q:.0%})")
    table, changed = compare.role_transitions(fa, fb, quantile=quantile)
    m3.metric("Neurons that change role", f"{changed:,} ({changed / max(len(fa), 1):.1%})",
              help=f"of {len(fa):,} neurons, with the role thresholds chosen below")
    z = table.to_numpy()
    fig = go.Figure(go.Heatmap(z=z.tolist(), x=list(table.columns), y=list(table.index), colorscale="Blues",
                               text=z.tolist(), texttemplate="%{text:,}", textfont=dict(size=18),
                               hovertemplate="A: %{y}<br>B: %{x}<br>%{z:,} neurons<extra></extra>",
                               colorbar_title="neurons"))
    fig.update_layout(title=f"Role in A (rows) → role in B (columns), {changed:,} neurons change",
                      xaxis_title="role in B", yaxis_title="role in A", yaxis_autorange="reversed")
    _chart(fig, "role_transitions")

    # the same neuron's numbers in A and B
    c1, c2 = st.columns(2)
    for col, column, name in ((c1, "tf", "TF"), (c2, "idf", "IDF")):
        s = compare.paired_sample(fa, fb, column)
        if column == "tf":
            s = s[(s["a"] > 0) & (s["b"] > 0)]  # a log axis has no place for 0
        fig = go.Figure(go.Scattergl(x=s["a"].to_numpy(), y=s["b"].to_numpy(), mode="markers",
                                     marker=dict(size=5, opacity=0.5, color=s["layer"].to_numpy(),
                                                 colorscale="Viridis", colorbar=dict(title="layer")),
                                     customdata=s[["layer", "neuron"]].to_numpy(),
                                     hovertemplate="layer %{customdata[0]}, neuron %{customdata[1]}<br>A %{x:.4g}"
                                                   "<br>B %{y:.4g}<extra></extra>"))
        lo, hi = float(min(s["a"].min(), s["b"].min())), float(max(s["a"].max(), s["b"].max()))
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(dash="dash", color="#555"),
                                 name="A = B", hoverinfo="skip"))
        fig.update_layout(title=f"{name}: A (x) vs B (y), {len(s):,} neurons", xaxis_title=f"{name} in A",
                          yaxis_title=f"{name} in B", showlegend=False)
        if column == "tf":
            ui.log_axis(fig, s["a"], "x")
            ui.log_axis(fig, s["b"], "y")
        with col:
            _chart(fig, f"{column}_a_vs_b", height=520)

    with st.expander("Numbers per layer"):
        ui.table(corr.merge(per, on="layer").rename(columns={"tf": "ρ TF", "idf": "ρ IDF", "score": "ρ score"}),
                 "compare_per_layer", hide_index=True)
