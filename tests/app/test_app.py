"""The Streamlit app through AppTest: every page renders, and the numbers it shows are the library's.

A cache entry for the tiny random model is made in-process (fast); the app is pointed at it through
st.session_state["entry_key"]. Charts are checked through their plotly specs (JSON).
"""

import base64
import json
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from neuronrank.analysis import scoring
from neuronrank.data import stats_cache as store
from neuronrank.engine.statistics import get_stats
from neuronrank.config.requests import StatsRequest
from neuronrank.runs.store import RunStore

APP = str(Path(__file__).resolve().parents[2] / "app.py")
PAGES = ("app_pages/1_statistics.py", "app_pages/2_exponents.py", "app_pages/3_roles.py")


@pytest.fixture(scope="module")
def entry(tiny_dir, text_file):
    res = get_stats(StatsRequest(model=str(tiny_dir), calib=f"file:{text_file}", nsamples=4, seqlen=16, seed=0,
                                 batch_size=2))
    return res.entry.key, res.stats, res.stats.to_frame()


@pytest.fixture
def app(entry):
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["entry_key"] = entry[0]
    # AppTest runs app.py on the first run only; after switch_page it executes the page file directly,
    # and ui.page_setup() then does app.py's part: the sidebar and navigation
    at.run()
    return at


def goto(at, page):
    at.switch_page(page)
    at.run()
    assert_clean(at)
    return at


def assert_clean(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def charts(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def chart(at, title_start: str) -> dict:
    found = [s for s in charts(at) if _title(s).startswith(title_start)]
    assert len(found) == 1, [_title(s) for s in charts(at)]
    return found[0]


def _title(spec) -> str:
    t = spec.get("layout", {}).get("title", "")
    return t.get("text", "") if isinstance(t, dict) else str(t)


def arr(value) -> np.ndarray:
    """A plotly array from a spec: a list, or a base64 typed array {"dtype", "bdata"}."""
    if isinstance(value, dict) and "bdata" in value:
        a = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]).newbyteorder("<"))
        return a.reshape([int(d) for d in str(value["shape"]).split(",")]) if "shape" in value else a
    return np.asarray(value)


def compute_button(at):
    return next(b for b in at.button if b.label == "Compute statistics")


def table_with(at, column: str):
    found = [d.value for d in at.dataframe if column in d.value.columns]
    assert found, [list(d.value.columns) for d in at.dataframe]
    return found[0]


# ----------------------------------------------------------------------------------------------


def test_every_page_renders_with_the_entry_loaded(app, entry):
    assert_clean(app)
    assert app.session_state["entry_key"] == entry[0]
    assert app.selectbox(key="_entry_select").value == entry[0]
    assert any("loaded:" in s.value and entry[0][:8] in s.value for s in app.success)
    for page in PAGES:
        goto(app, page)
        assert app.get("plotly_chart") or app.get("bidi_component"), page  # the explorer's charts are the browser's


def test_pages_without_any_entry_explain_instead_of_failing(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURONRANK_CACHE", str(tmp_path / "empty"))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert_clean(at)
    for page in PAGES:
        goto(at, page)
        assert any("No statistics loaded" in i.value for i in at.info), page


def test_statistics_page_numbers(app, entry):
    _, stats, frame = entry
    text = " ".join(m.value for m in app.markdown)
    dead = scoring.dead_mask(stats.n_active, stats.tokens[:, None])  # the one definition (< 0.1 % of the tokens)
    if dead.any():
        spec = chart(app, "Dead neurons per layer")
        np.testing.assert_array_equal(arr(spec["data"][0]["y"]), dead.sum(axis=1))
        np.testing.assert_array_equal(arr(spec["data"][1]["y"]), (stats.n_active == 0).sum(axis=1))
    else:
        assert "No neuron is dead" in text
    # every layer sees the same tokens: said in a sentence, not drawn as a constant bar chart
    assert len(set(stats.tokens)) == 1 and f"**{int(stats.tokens[0]):,} tokens**" in text
    box = chart(app, "TF (mean |activation|) per layer")["data"][0]
    np.testing.assert_allclose(arr(box["median"]), np.median(stats.tf, axis=1))
    np.testing.assert_allclose(arr(box["q1"]), np.quantile(stats.tf, 0.25, axis=1))
    cache = table_with(app, "age")
    assert entry[0] in set(cache["key"])


def component_data(at, name: str) -> dict:
    """What a browser component (components/) was sent on the last run: its JSON, Arrow tables decoded."""
    import pyarrow as pa

    proto = next(c.proto for c in at.get("bidi_component") if c.proto.component_name.endswith(name))
    which = proto.WhichOneof("data")
    if which == "json":
        return json.loads(proto.json)
    data = json.loads(proto.mixed.json)
    blobs = {k: pa.ipc.open_stream(v.data).read_all() for k, v in proto.mixed.arrow_blobs.items()}
    return {k: blobs[v["__streamlit_arrow_ref__"]] if isinstance(v, dict) and "__streamlit_arrow_ref__" in v else v
            for k, v in data.items()}


def test_explorer_gets_the_entry_once_and_the_view_from_the_session(app, entry):
    from plotly.offline import get_plotlyjs

    from neuronrank.views import explorer

    _, stats, frame = entry
    goto(app, "app_pages/2_exponents.py")
    data = component_data(app, "nr_explorer")
    assert data["entry"] == entry[0] and (data["n_layers"], data["width"]) == (stats.n_layers, stats.width)
    assert data["view"] == {"alpha": 1.0, "beta": 1.0, "gamma": 1.0, "sparsity": 0.5, "layer": 0, "log": True,
                            "grouping": "per layer"}
    # the arrays the browser scores from: the library's columns, float64, bit for bit; Plotly from the package
    table = data["arrays"]
    want = explorer.browser_columns(explorer.neuron_arrays(frame))
    assert table.column_names == list(want) and all(table[c].num_chunks == 1 for c in want)
    for name, column in want.items():
        np.testing.assert_array_equal(table[name].to_numpy(), column)
    assert data["plotly_js"] == get_plotlyjs()
    # once per session: the next run sends neither
    app.run()
    again = component_data(app, "nr_explorer")
    assert "arrays" not in again and "plotly_js" not in again and again["rev"] == data["rev"]
    # the page's own view lives in the URL
    assert (app.query_params["layer"], app.query_params["logx"], app.query_params["overlap"]) == ("0", "1", "per-layer")


def test_presets_reach_the_browser_and_the_shared_state(app):
    goto(app, "app_pages/2_exponents.py")
    rev = component_data(app, "nr_explorer")["rev"]
    app.button(key="preset_high sparsity").click().run()
    assert_clean(app)
    data = component_data(app, "nr_explorer")
    assert (data["view"]["alpha"], data["view"]["beta"], data["view"]["gamma"], data["view"]["sparsity"]) == \
        (1.5, 1.0, 1.5, 0.7)
    assert data["rev"] == rev + 1  # a view from Python: the browser applies it
    assert (app.session_state["alpha"], app.session_state["beta"], app.session_state["gamma"]) == (1.5, 1.0, 1.5)
    assert app.query_params["alpha"] == "1.5" and app.query_params["sparsity"] == "0.7"
    # the choice outlives a page switch (for the Prune page), and comes back to the explorer
    goto(app, "app_pages/1_statistics.py")
    assert app.session_state["gamma"] == 1.5
    goto(app, "app_pages/2_exponents.py")
    assert component_data(app, "nr_explorer")["view"]["gamma"] == 1.5


def test_explorer_view_from_a_link(entry):
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["entry_key"] = entry[0]
    for k, v in dict(entry=entry[0], alpha="2", beta="0.5", gamma="0.6", sparsity="0.3", layer="1", logx="0",
                     overlap="global").items():
        at.query_params[k] = v
    at.run()
    at.switch_page("app_pages/2_exponents.py").run()
    assert_clean(at)
    assert not at.warning
    assert component_data(at, "nr_explorer")["view"] == {"alpha": 2.0, "beta": 0.5, "gamma": 0.6, "sparsity": 0.3,
                                                         "layer": 1, "log": False, "grouping": "globally"}


def heatmap(at) -> dict:
    """The Roles page's heatmap trace (its heading is the page's: a chart title collided with the top labels)."""
    found = [t for spec in charts(at) for t in spec["data"] if t["type"] == "heatmap"]
    assert len(found) == 1
    return found[0]


def static_table(at, column: str):
    """An st.table holding `column` (numbers shown with thousands separators), as numbers where they are."""
    import pandas as pd

    found = [t.value for t in at.table if column in t.value.columns]
    assert found, [list(t.value.columns) for t in at.table]
    def number(v):
        try:
            return int(str(v).replace(",", ""))
        except ValueError:
            return v

    return found[0].map(number)


def test_roles_counts_equal_scoring_roles(app, entry):
    from neuronrank.views import roles

    _, stats, frame = entry
    goto(app, "app_pages/3_roles.py")
    # the default: 'high' = the layer's top 10 %, dead neurons (active on < 0.1 % of the tokens) in their own class
    _, counts = scoring.roles(frame, quantile=0.9, dead_below=scoring.DEAD_BELOW)
    heat = heatmap(app)
    np.testing.assert_array_equal(arr(heat["text"]), counts.drop(index="all").to_numpy())
    # colour: each column on its own scale (prune-first's ~80 % would otherwise decide it)
    np.testing.assert_allclose(arr(heat["z"]), roles.column_colours(roles.role_tables(
        frame, quantile=0.9, dead_below=scoring.DEAD_BELOW).percent).to_numpy())
    assert any("What the matrix shows" in m.value for m in app.markdown)
    assert app.query_params["thresholds"] == "quantile" and app.query_params["q"] == "0.9"
    # the median: the redundancy is said, and the cells equal scoring.roles' median split
    app.select_slider(key="_role_quantile").set_value(0.5).run()
    app.checkbox(key="_role_dead").uncheck().run()
    assert_clean(app)
    assert any("one degree of freedom" in c.value and "critical* = *prune-first*" in c.value for c in app.caption)
    _, counts = scoring.roles(frame)
    overall = static_table(app, "IDF high")
    total = counts.loc["all"]
    assert list(overall["IDF high"]) == [total["critical"], total["moderate"]]
    assert list(overall["IDF low"]) == [total["important"], total["prune-first"]]
    heat = heatmap(app)
    np.testing.assert_array_equal(arr(heat["text"]), counts.drop(index="all").to_numpy())
    assert app.query_params["q"] == "0.5" and app.query_params["dead"] == "0"

    # split by |W| with global thresholds typed in
    app.checkbox(key="_role_split").check().run()
    app.radio(key="_role_mode").set_value("global value").run()
    assert_clean(app)
    key = entry[0]
    app.number_input(key=f"_thr_tf_{key}").set_value(0.05).run()
    app.number_input(key=f"_thr_idf_{key}").set_value(1.5).run()
    app.number_input(key=f"_thr_w_{key}").set_value(2.0).run()
    assert_clean(app)
    _, counts = scoring.roles(frame, 0.05, 1.5, 2.0, split_w=True)
    heat = heatmap(app)
    np.testing.assert_array_equal(arr(heat["text"]), counts.drop(index="all").to_numpy())
    # two label rows, never one long colliding line: the role over its pair, then "high<br>|W|" / "low<br>|W|"
    assert len(counts.columns) == 8 and [list(r) for r in heat["x"]] == [
        [c.split(" / ")[0] for c in counts.columns], [c.split(" / ")[1].replace(" ", "<br>") for c in counts.columns]]
    assert [c[0] for c in heat["customdata"][0]] == list(counts.columns)  # the hover names the whole column
    overall = static_table(app, "IDF high, |W| high")
    assert overall.to_numpy().sum() == len(frame)
    assert overall["IDF low, |W| low"].iloc[1] == counts.loc["all", "prune-first / low |W|"]
    # every control is in the URL, the thresholds exactly (repr: a link restores the same cells)
    qp = app.query_params
    assert (qp["thresholds"], qp["tf"], qp["idf"], qp["w"], qp["split"]) == ("value", "0.05", "1.5", "2.0", "1")
    assert "q" not in qp


def test_roles_scatter_draws_every_neuron_and_neuron_shows_contexts(app, entry, tiny_dir):
    from transformers import AutoTokenizer

    _, stats, frame = entry
    goto(app, "app_pages/3_roles.py")
    data = component_data(app, "nr_scatter")  # every neuron is drawn in the browser from the entry's arrays
    assert data["width"] == stats.width and data["arrays"].num_rows == len(frame)
    np.testing.assert_array_equal(data["arrays"]["tf"].to_numpy(), frame["tf"])
    app.checkbox(key="_scatter_log").uncheck().run()
    data = component_data(app, "nr_scatter")
    assert data["entry"] == entry[0] and data["log"] is False and data["picked"] == [0, 0] and "arrays" not in data

    layer, neuron = 1, 5
    app.number_input(key="_pick_layer").set_value(layer).run()
    app.number_input(key="_pick_neuron").set_value(neuron).run()
    assert_clean(app)
    assert component_data(app, "nr_scatter")["picked"] == [layer, neuron]
    assert app.query_params["neuron"] == f"{layer}:{neuron}" and app.query_params["logtf"] == "0"
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["TF"] == f"{stats.tf[layer, neuron]:.4g}" and metrics["IDF"] == f"{stats.idf[layer, neuron]:.4g}"
    # beside the contexts: the tokens it promotes and suppresses (unembed.py, checked against torch there)
    from neuronrank.views import unembed

    md = " ".join(m.value for m in app.markdown)
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    best = unembed.load(str(tiny_dir)).neuron_tokens(layer, neuron, k=8)["promoted"][0]
    assert "Tokens it promotes / suppresses" in md and f"`{tok.decode([best[0]])!r}` {best[1]:+.2f}" in md
    # top context: the firing token is the one recorded for the neuron, marked (HTML, escaped)
    import html as _html

    w, p = stats.top_window[layer, neuron, 0], stats.top_pos[layer, neuron, 0]
    firing = tok.decode([int(stats.windows[w][p])])
    body = [h.proto.body for h in app.get("html") if "nr-ctx" in h.proto.body][0]
    lines = [part for part in body.split("<div class='nr-ctx'>")[1:]]
    valid = int((stats.top_window[layer, neuron] >= 0).sum())
    assert len(lines) == valid > 0
    assert lines[0].startswith(f"<code>{stats.top_vals[layer, neuron, 0]:+.3f}</code> · window {w}, position {p}")
    assert not firing.strip() or f"<mark>{_html.escape(firing)}</mark>" in lines[0]


def test_roles_view_from_a_link(entry):
    _, stats, frame = entry
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["entry_key"] = entry[0]
    at.run()
    for k, v in dict(thresholds="value", tf="0.05", idf="1.5", w="2.0", split="1", dead="0", cells="percent",
                     logtf="0", neuron=f"1:7").items():
        at.query_params[k] = v
    at.switch_page("app_pages/3_roles.py").run()
    assert_clean(at)
    assert not at.warning
    assert at.radio(key="_role_mode").value == "global value" and at.checkbox(key="_role_split").value
    assert at.number_input(key=f"_thr_tf_{entry[0]}").value == 0.05 and not at.checkbox(key="_role_dead").value
    assert (at.number_input(key="_pick_layer").value, at.number_input(key="_pick_neuron").value) == (1, 7)
    _, counts = scoring.roles(frame, 0.05, 1.5, 2.0, split_w=True)
    heat = heatmap(at)
    percent = counts.drop(index="all").div(counts.drop(index="all").sum(axis=1), axis=0) * 100
    np.testing.assert_allclose(arr(heat["text"]).astype(float), percent.round(1).to_numpy())


def test_compute_statistics_runs_in_a_worker_and_loads_the_result(app, tiny_dir, text_file):
    app.text_input(key="sb_model").input(str(tiny_dir)).run()
    app.selectbox(key="sb_calib").set_value("file:PATH").run()
    app.text_input(key="sb_calib_file").input(str(text_file)).run()
    app.number_input(key="sb_nsamples").set_value(4).run()
    app.number_input(key="sb_seqlen").set_value(16).run()
    app.number_input(key="sb_seed").set_value(3).run()
    assert_clean(app)
    assert app.session_state["stats_params"] == dict(model=str(tiny_dir), calib=f"file:{text_file}", nsamples=4,
                                                     seqlen=16, seed=3, site="gate", skip_first=0)
    compute_button(app).click().run()
    assert_clean(app)
    run_id = int(app.query_params["run"] if "run" in app.query_params else app.session_state["stats_run"])
    runs = RunStore()
    deadline = time.time() + 120
    while (run := runs.get(run_id))["status"] in ("queued", "running"):
        assert time.time() < deadline, f"run {run_id} still {run['status']}: {run['message']}"
        time.sleep(0.3)
    assert run["status"] == "done", run["error"]
    assert run["params"]["seed"] == 3 and run["kind"] == "stats"
    key = run["result"]["cache_key"]
    assert key in {e.key for e in store.list_entries()}
    # the next redraw sees the finished run and loads its entry
    app.run()
    assert_clean(app)
    assert app.session_state["entry_key"] == key
    assert any(f"Run {run_id} done" in s.value for s in app.success)
    assert "stats_run" not in app.session_state


def test_bad_parameters_are_refused_readably(app):
    app.text_input(key="sb_model").input("/no/such/model").run()
    assert not app.exception
    assert any("not found" in e.value for e in app.error)
    assert compute_button(app).disabled  # checked as typed: nothing to click


def test_cache_table_selection_loads_and_deletes(app, entry, tiny_dir, text_file):
    extra = get_stats(StatsRequest(model=str(tiny_dir), calib=f"file:{text_file}", nsamples=4, seqlen=16, seed=9,
                                   batch_size=2)).entry.key
    app.run()
    table = table_with(app, "age")
    row = list(table["key"]).index(extra)
    version = app.session_state["cache_table_version"]
    app.session_state[f"cache_table_{version}"] = {"selection": {"rows": [row], "columns": [], "cells": []}}
    app.run()
    assert_clean(app)
    app.button(key=f"load_{extra}").click().run()
    assert app.session_state["entry_key"] == extra
    assert app.selectbox(key="_entry_select").value == extra
    app.button(key=f"delete_{extra}").click().run()
    assert_clean(app)
    assert extra not in {e.key for e in store.list_entries()}
    assert app.session_state["cache_table_version"] == version + 1  # the old row selection is dropped
    assert app.session_state["entry_key"] != extra and app.session_state["entry_key"] in {
        e.key for e in store.list_entries()}
    assert not [b for b in app.button if (b.key or "").startswith("delete_")]


# ----------------------------------------------------------------------------------------------
# the URL and stored runs are anyone's text: shown as text, never as markdown; every query parameter checked

LINK, IMAGE = "[x](https://example.com)", "![t](https://example.com/t.png)"
MARKDOWN_ELEMENTS = ("markdown", "caption", "info", "warning", "error", "success", "subheader", "header", "title")


def markdown_bodies(at) -> list[str]:
    out = [e.value for kind in MARKDOWN_ELEMENTS for e in getattr(at, kind)]
    return out + [b.label for b in at.button] + [p.proto.text for p in at.get("progress")]


def live_links(body: str) -> list[str]:
    """What a markdown renderer would make a link or an image of: CommonMark links, images and <autolinks>
    (markdown-it), plus GitHub's autolink literals, which Streamlit finds in the rendered text (escapes
    resolved): a bare https://, www. or an e-mail address there."""
    import re

    from markdown_it import MarkdownIt

    tokens = [c for t in MarkdownIt("commonmark").parse(body) for c in (t.children or [])]
    found = [c.type for c in tokens if c.type in ("link_open", "image")]
    rendered = "".join(c.content for c in tokens if c.type == "text")
    return found + re.findall(r"https?://|www\.|[\w.+-]+@[\w-]+\.\w", rendered, re.IGNORECASE)


def shown_text(body: str) -> str:
    from markdown_it import MarkdownIt

    text = "".join(c.content for t in MarkdownIt("commonmark").parse(body) for c in (t.children or [])
                   if c.type in ("text", "code_inline"))
    return text.replace("\u2060", "")  # the invisible joiner that keeps a URL from being autolinked


@pytest.mark.parametrize("page,param,value", [
    ("app_pages/1_statistics.py", "entry", LINK),
    ("app_pages/1_statistics.py", "entry", IMAGE),
    ("app_pages/1_statistics.py", "run", LINK),
    ("app_pages/1_statistics.py", "run", "99999999999999999999999999"),
    ("app_pages/1_statistics.py", "alpha", "nan"),
    ("app_pages/1_statistics.py", "sparsity", "1e400"),
    ("app_pages/4_prune.py", "run", IMAGE),
    ("app_pages/4_prune.py", "run", "99999999999999999999999999"),
    ("app_pages/4_prune.py", "run", "-3"),
    ("app_pages/5_search.py", "study", LINK),
    ("app_pages/5_search.py", "study", IMAGE),
    ("app_pages/5_search.py", "search_run", "99999999999999999999999999"),
    ("app_pages/5_search.py", "search_run", LINK),
    ("app_pages/2_exponents.py", "layer", LINK),
    ("app_pages/2_exponents.py", "layer", "99"),
    ("app_pages/2_exponents.py", "overlap", IMAGE),
    ("app_pages/2_exponents.py", "logx", "2"),
    ("app_pages/3_roles.py", "neuron", LINK),
    ("app_pages/3_roles.py", "neuron", "99:0"),
    ("app_pages/3_roles.py", "q", "0.3"),
    ("app_pages/3_roles.py", "tf", "nan"),
    ("app_pages/3_roles.py", "split", IMAGE),
])
def test_query_parameters_are_checked_and_shown_as_text(entry, page, param, value):
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["entry_key"] = entry[0]
    if page.endswith("1_statistics.py"):  # the page a link opens first (the sidebar restores the view once)
        at.query_params[param] = value
        at.run()
    else:
        at.run()
        at.query_params[param] = value
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]  # no traceback, no server paths
    bodies = markdown_bodies(at)
    assert [b for b in bodies if live_links(b)] == []
    notices = [shown_text(w.value) for w in at.warning]
    assert any(f"{param}={value[:40]}" in n and "ignored" in n for n in notices), notices
    assert at.query_params.get(param) != value  # dropped from the URL (or replaced by the view's own value)
    assert not any("site-packages" in b or "Traceback" in b for b in bodies)


def test_a_study_that_does_not_exist_is_not_said_to_be_starting(entry):
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["entry_key"] = entry[0]
    at.run()
    at.query_params["study"] = "doesnotexist"
    at.switch_page("app_pages/5_search.py").run()
    assert not at.exception
    said = [i.value for i in at.info]
    assert any("There is no study named doesnotexist" in s for s in said), said
    assert not any("starting" in s for s in said), said


def test_a_stored_run_s_text_is_shown_as_text(entry):
    """A run's error and its parameters come from whoever queued it: the Prune page shows them as text."""
    store = RunStore()
    run_id = store.create("prune", {"prune_method": "magnitude", "sparsity_type": "unstructured",
                                    "sparsity_ratio": 0.5, "eval": f"file:{LINK}"}, status="running")
    store.finish(run_id, "failed", error=f"text file not found: {LINK} {IMAGE} <https://example.com> www.example.com")
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["entry_key"] = entry[0]
    at.run()
    at.query_params["run"] = str(run_id)
    at.switch_page("app_pages/4_prune.py").run()
    assert not at.exception, [e.value for e in at.exception]
    failed = [e.value for e in at.error if e.value.startswith(f"Run {run_id} failed")]
    assert len(failed) == 1 and live_links(failed[0]) == []
    assert shown_text(failed[0]) == (f"Run {run_id} failed: text file not found: {LINK} {IMAGE} "
                                     "<https://example.com> www.example.com")  # every character, as typed
    assert [b for b in markdown_bodies(at) if live_links(b)] == []


def test_plain_and_code_keep_every_character():
    from neuronrank.views import display as views

    hostile = "a_b *c* `d` [x](https://e.com) ![i](h) <b>x</b> $x$ :red[y] # h \\ | ~ www.e.com"
    assert shown_text(views.plain(hostile)) == hostile and live_links(views.plain(hostile)) == []
    for text in ("plain", "a`b", "``x``", "`", "[x](https://e.com)"):
        assert shown_text(views.code(text)).strip() == text and "link_open" not in live_links(views.code(text))


def test_model_specs_and_paths_are_checked_as_typed(app, tiny_dir, text_file):
    app.text_input(key="sb_model").input("smollm2-135").run()
    assert not app.exception
    said = [shown_text(e.value) for e in app.error]
    assert any("'smollm2-135' is not a model here" in s and "Did you mean smollm2-135m?" in s for s in said), said
    assert compute_button(app).disabled  # nothing queued to fail behind other runs
    app.text_input(key="sb_model").input(str(tiny_dir)).run()
    assert not app.error and not compute_button(app).disabled
    app.selectbox(key="sb_calib").set_value("file:PATH").run()
    app.text_input(key="sb_calib_file").input(str(text_file.parent)).run()  # a folder, not a file
    said = [shown_text(e.value) for e in app.error]
    assert any(f"{text_file.parent} is a folder, not a file" in s for s in said), said
    assert compute_button(app).disabled
    app.text_input(key="sb_calib_file").input(str(text_file.parent / "missing.txt")).run()
    assert any("missing.txt does not exist" in shown_text(e.value) for e in app.error)
    app.text_input(key="sb_calib_file").input(str(text_file)).run()
    assert not app.error and not compute_button(app).disabled
