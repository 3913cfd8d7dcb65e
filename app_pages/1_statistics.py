"""Statistics: compute an entry in a worker process, manage the cache, per-layer summary of the loaded one."""

import plotly.graph_objects as go
import streamlit as st

import ui
from neuronrank.analysis import scoring
from neuronrank.config import requests
from neuronrank.data import stats_cache as store
from neuronrank.data.inputs import check_inputs
from neuronrank.queue import jobs
from neuronrank.views.display import plain
from neuronrank.views.entries import entries_table, entry_label

ui.page_setup()
st.title("NeuronRank Studio")
st.markdown(
    "Which MLP neurons of a language model matter, and what happens when the others are pruned? One pass of "
    "calibration text through the model gives every neuron three numbers:\n"
    "- **TF** — its mean |activation| over all tokens (how strongly it fires);\n"
    "- **IDF** — its selectivity, ln((T+1)/(n_active+1)) + 1 (high when it fires on few tokens);\n"
    "- **|W|** — the L2 norm of its `gate_proj` row (how large its input weights are).\n\n"
    "NeuronRank-OLD ranks neurons by **score = |W|^α × TF^β × IDF^γ**. The four steps, one page each: "
    "**Statistics** (compute or load them, here) → **Exponents** (move α, β, γ and see the ranking change) → "
    "**Roles** (neurons sorted by high/low TF and IDF, and single neurons with the text they fire on) → "
    "**Prune & evaluate** (a real prune and its perplexity, against magnitude, Wanda and random).")

# ----------------------------------------------------------------------------------------------
# compute (in a worker process: the app never holds a model)

st.header("Compute statistics")
params = st.session_state.get("stats_params", {})
if params:
    st.markdown(f"With the sidebar's parameters: model **{plain(params.get('model'))}**, calibration text "
                f"**{plain(params.get('calib'))}**, {params.get('nsamples')} windows × {params.get('seqlen')} "
                f"tokens ({int(params.get('nsamples', 0)) * int(params.get('seqlen', 0)):,} tokens), seed "
                f"{params.get('seed')}, activation site `{params.get('site')}`.")
problem = st.session_state.get("stats_params_problem")
if problem:
    st.error(f"Fix the sidebar's parameters first: {plain(problem)}")
if st.button("Compute statistics", type="primary", disabled=bool(problem)):
    with ui.user_errors():
        req = requests.StatsRequest(**params)
        req.validate()
        check_inputs(req)
        run_id = jobs.submit("stats", req)
        st.session_state["stats_run"] = run_id
        st.session_state.pop("last_run", None)
        st.query_params["run"] = str(run_id)


def _finished(run: dict | None) -> None:
    """A finished statistics run: remember its outcome, load its entry, and redraw the whole app once."""
    if run is None or run["status"] in ui.ACTIVE:
        return
    ui.forget_run("stats")
    st.session_state["last_run"] = {k: run[k] for k in ("id", "status", "error", "result")}
    if run["status"] == "done" and run["result"]:
        ui.select_entry(run["result"]["cache_key"])
    st.rerun()


ui.follow_run("stats", _finished)

last = st.session_state.get("last_run")
if last:
    if last["status"] == "done":
        r = last["result"] or {}
        how = "found in the cache" if r.get("cached") else f"computed in {r.get('seconds', 0):.1f} s"
        st.success(f"Run {last['id']} done: {r.get('tokens', 0):,} tokens per layer, {how}; entry "
                   f"`{r.get('cache_key')}` loaded.")
    elif last["status"] == "failed":
        st.error(f"Run {last['id']} failed: {plain(last['error'])}")
    else:
        st.warning(f"Run {last['id']} {last['status']}.")

# ----------------------------------------------------------------------------------------------
# the cache

st.header("Cached statistics")
entries = ui.safe_entries()
if entries:
    table = entries_table(entries)
    # a new widget key after a deletion: row selections are positions, they must not carry over
    version = st.session_state.setdefault("cache_table_version", 0)
    event = ui.table(table.drop(columns="size_bytes"), "cache_entries", key=f"cache_table_{version}",
                     on_select="rerun", selection_mode="multi-row", hide_index=True)
    chosen = [table["key"].iloc[i] for i in event.selection.rows if i < len(table)]
    by_key = {e.key: e for e in entries}
    for key in chosen:
        c1, c2, c3 = st.columns([6, 1, 1])
        c1.write(plain(entry_label(by_key[key])))
        c2.button("Load", key=f"load_{key}", on_click=ui.select_entry, args=(key,),
                  disabled=key == st.session_state.get("entry_key"))
        if c3.button("Delete", key=f"delete_{key}"):
            with ui.user_errors():
                store.delete_entry(key)
                if st.session_state.get("entry_key") == key:
                    ui.select_entry(None)
                st.session_state["cache_table_version"] = version + 1
                st.rerun()
else:
    st.info("The cache is empty.")

# ----------------------------------------------------------------------------------------------
# the loaded entry, per layer

entry, data = ui.require_entry()
st.header("Per-layer summary")
overview = ui.layer_overview(entry.key, entry.created)
summary = overview["summary"]
p = entry.params
st.caption(f"{plain(p.get('model'))} · {plain(p.get('calib'))} · {p.get('nsamples')} windows × "
           f"{p.get('seqlen')} tokens · site `{data.meta.get('site', p.get('site'))}` · {data.n_layers} layers × "
           f"{data.width} neurons. "
           "Boxes: quartiles; whiskers: the furthest neuron within 1.5 IQR (outliers not drawn).")

names = {"tf": "TF (mean |activation|)", "idf": "IDF (selectivity)", "w_norm": "|W| (gate row L2 norm)"}
for tab, (col, title) in zip(st.tabs(list(names.values())), names.items()):
    with tab:
        q = overview[col]
        log_y = col == "tf" and st.checkbox("log scale", value=True, key="tf_log_y",
                                            disabled=bool((q["min"] <= 0).any()),
                                            help="unavailable when some neuron has TF = 0")
        fig = go.Figure(go.Box(x=q["layer"].tolist(), q1=q["q1"].tolist(), median=q["median"].tolist(),
                               q3=q["q3"].tolist(), lowerfence=q["lowerfence"].tolist(),
                               upperfence=q["upperfence"].tolist(), mean=q["mean"].tolist(), name=title,
                               boxpoints=False))
        fig.update_layout(title=f"{title} per layer", xaxis_title="layer", yaxis_title=title, showlegend=False)
        if log_y:
            ui.log_axis(fig, list(q["lowerfence"]) + list(q["upperfence"]), "y")
        ui.chart(fig, f"{col}_per_layer")

tokens = summary["tokens"].unique()
if len(tokens) == 1:
    st.markdown(f"Every layer saw the same **{int(tokens[0]):,} tokens** (T in the IDF formula).")
else:
    fig = go.Figure(go.Bar(x=summary["layer"].tolist(), y=summary["tokens"].tolist()))
    fig.update_layout(title="Tokens per layer", xaxis_title="layer", yaxis_title="tokens")
    ui.chart(fig, "tokens_per_layer")
if int(summary["dead"].sum()):
    fig = go.Figure([go.Bar(x=summary["layer"].tolist(), y=summary["dead"].tolist(),
                            name="dead (active on < 0.1 % of the tokens)"),
                     go.Bar(x=summary["layer"].tolist(), y=summary["never_active"].tolist(), name="of them never active")])
    fig.update_layout(title=f"Dead neurons per layer ({int(summary['dead'].sum()):,} in all, "
                            f"{int(summary['never_active'].sum()):,} of them never active)",
                      xaxis_title="layer", yaxis_title="neurons", barmode="overlay",
                      legend=dict(orientation="h", y=-0.25, yanchor="top", x=0))
    ui.chart(fig, "dead_per_layer")
    st.caption(f"**Dead** (the definition every page uses): {scoring.DEAD_RULE}. {scoring.DEAD_WHY}")
else:
    st.markdown(f"No neuron is dead (dead: {scoring.DEAD_RULE}).")
ui.table(summary, "layer_summary", hide_index=True)
