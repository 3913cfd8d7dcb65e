"""neuronrank.views.explorer: the numbers the app's pages show, checked against direct numpy recomputation."""

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neuronrank.analysis import scoring
from neuronrank.data import stats_cache as store
from neuronrank.views import explorer as views


def synthetic_frame(n_layers=3, width=40, seed=0, dead_per_layer=2) -> pd.DataFrame:
    """A stats table of the contract's shape with random values (and some dead neurons)."""
    rng = np.random.default_rng(seed)
    n = n_layers * width
    tokens = 64
    n_active = rng.integers(1, tokens, n)
    for layer in range(n_layers):
        n_active[layer * width: layer * width + dead_per_layer] = 0
    tf = rng.lognormal(-2, 1, n)
    tf[n_active == 0] = 0.0
    return pd.DataFrame({
        "layer": np.repeat(np.arange(n_layers, dtype=np.int32), width),
        "neuron": np.tile(np.arange(width, dtype=np.int32), n_layers),
        "tf": tf,
        "idf": np.log((tokens + 1) / (n_active + 1)) + 1,
        "n_active": n_active,
        "tokens": np.full(n, tokens),
        "w_norm": rng.lognormal(0.3, 0.2, n),
        "down_abs_mean": rng.uniform(0.01, 0.1, n),
        "x_norm_down": rng.uniform(0.5, 5, n),
    })


@pytest.fixture
def frame():
    return synthetic_frame()


@pytest.fixture
def arrays(frame):
    return views.neuron_arrays(frame)


def test_neuron_arrays_baselines(frame, arrays):
    np.testing.assert_array_equal(arrays["magnitude"], frame["w_norm"])
    np.testing.assert_allclose(arrays["wanda"], frame["down_abs_mean"] * frame["x_norm_down"])
    # scoring accepts the mapping like the frame itself
    np.testing.assert_array_equal(scoring.score(arrays, 1.5, 1, 0.5), scoring.score(frame, 1.5, 1, 0.5))


def test_layer_slice_is_the_layer(arrays):
    for layer in range(3):
        rows = arrays["layer"][views.layer_slice(arrays["layer"], layer)]
        assert len(rows) == 40 and (rows == layer).all()


# --- histograms -----------------------------------------------------------------------------


def test_linear_histogram_is_np_histogram(frame):
    s = scoring.score(frame, 1, 1, 1)
    h = views.histogram(s, bins=100)
    counts, edges = np.histogram(s, bins=100)
    np.testing.assert_array_equal(h.counts, counts)
    np.testing.assert_allclose(h.edges, edges)
    assert h.counts.sum() == h.total == len(s) and h.zeros == 6 and not h.log
    np.testing.assert_allclose(h.centers, (edges[1:] + edges[:-1]) / 2)


def test_log_histogram_bins_log10_and_counts_zeros(frame):
    s = scoring.score(frame, 1, 1, 1)
    h = views.histogram(s, bins=50, log=True)
    counts, edges = np.histogram(np.log10(s[s > 0]), bins=50)
    np.testing.assert_array_equal(h.counts, counts)
    np.testing.assert_allclose(h.edges, edges)
    assert h.zeros == int((s == 0).sum()) == 6 and h.counts.sum() + h.zeros == h.total


def test_histogram_edge_cases():
    empty = views.histogram(np.array([]), bins=10)
    assert empty.counts.sum() == 0 and len(empty.edges) == 11
    zeros = views.histogram(np.zeros(5), bins=10, log=True)
    assert zeros.counts.sum() == 0 and zeros.zeros == 5
    h = views.histogram(np.array([1.0, np.inf, 2.0, np.nan]), bins=4)
    assert h.dropped == 2 and h.counts.sum() == 2 and h.total == 4


def test_score_histograms_uses_the_one_scoring_path(arrays, frame):
    scores, overall, layer = views.score_histograms(arrays, 2.0, 0.5, 1.0, layer=1, log=False, bins=20)
    expect = scoring.score(frame, 2.0, 0.5, 1.0)
    np.testing.assert_array_equal(scores, expect)
    np.testing.assert_array_equal(overall.counts, np.histogram(expect, 20)[0])
    np.testing.assert_array_equal(layer.counts, np.histogram(expect[40:80], 20)[0])


# --- ranking views --------------------------------------------------------------------------


def test_pruned_fraction(arrays):
    s = scoring.score(arrays, 1, 1, 1)
    frac = views.pruned_fraction(s, arrays["layer"], 0.25)
    np.testing.assert_allclose(frac["per_layer"], 10 / 40)
    # the global threshold prunes the same total, distributed unevenly
    assert (frac["global"] * 40).sum() == pytest.approx(30)
    glob = scoring.lowest(s, arrays["layer"], 0.25, per_layer=False)
    np.testing.assert_allclose(frac["global"], [glob[i * 40:(i + 1) * 40].mean() for i in range(3)])


def test_ranking_overlap(arrays):
    summary, per_layer = views.ranking_overlap(arrays["w_norm"], arrays, 0.3, per_layer=True)
    mag = summary.set_index("baseline").iloc[0]
    assert mag["jaccard"] == 1.0 and mag["shared"] == mag["pruned"] == 36  # magnitude vs itself
    assert (per_layer["magnitude"] == 1.0).all() and list(per_layer["layer"]) == [0, 1, 2]
    s = scoring.score(arrays, 1, 1, 1)
    summary, per_layer = views.ranking_overlap(s, arrays, 0.3, per_layer=False)
    expect = scoring.overlap(s, arrays["wanda"], 0.3, layers=arrays["layer"], per_layer=False)
    assert summary["jaccard"].iloc[1] == expect["jaccard"]
    assert list(per_layer["wanda"]) == [expect["per_layer"][g] for g in range(3)]


@pytest.mark.parametrize("n", [1, 7, 50, 120, 500])
def test_lowest_neurons_is_stable_argsort(arrays, n):
    s = np.round(scoring.score(arrays, 1, 1, 1), 1)  # rounding makes many ties
    table = views.lowest_neurons(arrays, s, n)
    idx = np.argsort(s, kind="stable")[:n]
    np.testing.assert_array_equal(table["layer"], arrays["layer"][idx])
    np.testing.assert_array_equal(table["neuron"], arrays["neuron"][idx])
    np.testing.assert_array_equal(table["score"], s[idx])
    assert list(table.columns) == ["rank", "layer", "neuron", "tf", "idf", "w_norm", "score"]


# --- per-layer summaries --------------------------------------------------------------------


def test_layer_quantiles(frame):
    q = views.layer_quantiles(frame["tf"].to_numpy(), frame["layer"].to_numpy())
    for layer in range(3):
        v = frame["tf"].to_numpy()[frame["layer"] == layer]
        row = q.iloc[layer]
        np.testing.assert_allclose(row[["q1", "median", "q3"]].to_numpy(float), np.quantile(v, [0.25, 0.5, 0.75]))
        iqr = row["q3"] - row["q1"]
        inside = v[(v >= row["q1"] - 1.5 * iqr) & (v <= row["q3"] + 1.5 * iqr)]
        assert row["lowerfence"] == inside.min() and row["upperfence"] == inside.max()
        assert np.all(np.diff(row[["min", "lowerfence", "q1", "median", "q3", "upperfence", "max"]].to_numpy(float))
                      >= 0)


def test_layer_summary(frame):
    s = views.layer_summary(frame)
    assert list(s["dead"]) == [2, 2, 2] and list(s["tokens"]) == [64] * 3 and list(s["neurons"]) == [40] * 3


def test_grid_refuses_unequal_layers():
    with pytest.raises(ValueError):
        views.layer_quantiles(np.arange(5.0), np.array([0, 0, 1, 1, 1]))


# --- roles ----------------------------------------------------------------------------------


@pytest.mark.parametrize("split_w", [False, True])
def test_role_tables_match_scoring_roles(frame, arrays, split_w):
    rt = views.role_tables(arrays, split_w=split_w)
    labels, counts = scoring.roles(frame, split_w=split_w)
    np.testing.assert_array_equal(rt.labels, labels)
    np.testing.assert_array_equal(rt.counts.to_numpy(), counts.drop(index="all").to_numpy())
    np.testing.assert_allclose(rt.percent.sum(axis=1), 100)
    total = counts.loc["all"]
    assert rt.overall.to_numpy().sum() == len(frame)
    assert rt.overall.loc["TF high", "IDF high" + (", |W| high" if split_w else "")] == \
        total["critical / high |W|" if split_w else "critical"]
    assert rt.overall.loc["TF low", "IDF low" + (", |W| low" if split_w else "")] == \
        total["prune-first / low |W|" if split_w else "prune-first"]
    assert rt.overall.loc["TF high", "IDF low" + (", |W| high" if split_w else "")] == \
        total["important / high |W|" if split_w else "important"]
    assert list(rt.summary["neurons"]) == list(total)
    row = rt.summary.set_index("role").loc["moderate / low |W|" if split_w else "moderate"]
    assert (row["TF"], row["IDF"]) == ("low", "high")


def test_role_tables_global_thresholds(frame, arrays):
    med = views.global_medians(arrays)
    rt = views.role_tables(arrays, med["tf"], med["idf"], med["w_norm"], split_w=True)
    _, counts = scoring.roles(frame, med["tf"], med["idf"], med["w_norm"], split_w=True)
    np.testing.assert_array_equal(rt.counts.to_numpy(), counts.drop(index="all").to_numpy())
    # the |W| threshold is ignored unless the |W| split is on
    rt4 = views.role_tables(arrays, med["tf"], med["idf"], med["w_norm"], split_w=False)
    assert rt4.counts.shape == (3, 4)


def test_scatter_sample():
    assert (views.scatter_sample(100, 1000) == np.arange(100)).all()
    a, b = views.scatter_sample(50_000, 1000), views.scatter_sample(50_000, 1000)
    assert len(a) == 1000 and (a == b).all() and (np.diff(a) > 0).all()


# --- contexts -------------------------------------------------------------------------------


class FakeTokenizer:
    """decode(ids) -> the words joined; id 5 decodes to a leading-space word like BPE does."""

    words = {0: "a", 1: "b", 2: "c", 3: "*x*", 4: "\n", 5: " big", 6: "d"}

    def decode(self, ids):
        return "".join(self.words.get(int(i), "?") for i in ids)


def entry_with(top_vals, top_window, top_pos, windows, first_window=0):
    return views.EntryData(key="k", params={}, meta={}, frame=pd.DataFrame(), n_layers=1, width=1,
                           top_vals=np.asarray(top_vals, np.float32)[None, None],
                           top_window=np.asarray(top_window, np.int32)[None, None],
                           top_pos=np.asarray(top_pos, np.int32)[None, None],
                           windows=None if windows is None else np.asarray(windows, np.int32),
                           first_window=first_window)


def test_top_contexts_windows_and_padding():
    windows = [[0, 1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1, 0]]
    data = entry_with([3.0, 2.0, -np.inf], [1, 0, -1], [0, 5, -1], windows)
    ctx = views.top_contexts(data, 0, 0, radius=2)
    assert [c.value for c in ctx] == [3.0, 2.0]  # the padding entry is skipped
    assert ctx[0].ids == [6, 5, 4] and ctx[0].at == 0  # clipped at the window start
    assert ctx[1].ids == [3, 4, 5, 6] and ctx[1].at == 2 and ctx[1].pos == 5  # clipped at the end
    # windows of a shard are indexed from first_window
    shard = entry_with([1.0], [10], [1], [[0, 1, 2]], first_window=10)
    assert views.top_contexts(shard, 0, 0, radius=1)[0].ids == [0, 1, 2]
    assert views.top_contexts(entry_with([1.0], [0], [0], None), 0, 0) == []


def test_context_html_marks_and_escapes():
    tok = FakeTokenizer()
    text = views.context_html(tok, views.ActivationContext(1.0, 0, 2, [3, 4, 5, 0], 2))
    assert text == "*x*⏎<mark> big</mark>a"  # no markdown: asterisks stay literal text, newline visible
    newline = views.context_html(tok, views.ActivationContext(1.0, 0, 1, [0, 4, 0], 1))
    assert newline == "a<mark>⏎</mark>a"  # a whitespace token is made visible, not an empty mark
    assert views.context_html(_Tok({1: "<b>", 2: "**)"}), views.ActivationContext(1.0, 0, 1, [1, 2], 1)) == \
        "&lt;b&gt;<mark>**)</mark>"


class _Tok:
    def __init__(self, pieces):
        self.pieces = pieces

    def decode(self, ids):
        return "".join(self.pieces[i] for i in ids)


# --- the cache table and the sidebar --------------------------------------------------------


def fake_entry(key, created, **params):
    base = dict(model="m", calib="news", nsamples=4, seqlen=16, seed=0, site="gate", dtype="float32", topk=16)
    manifest = {"params": {**base, **params}, "created": created, "shape": [2, 8],
                "files": {"a": {"size": 1500}, "b": {"size": 548}}}
    return store.Entry(key, Path("/nowhere") / key, manifest)


def test_entries_table_and_labels():
    now = time.time()
    entries = [fake_entry("k1", now - 90), fake_entry("k2", now - 7200, calib="wiki")]
    t = views.entries_table(entries, now=now)
    assert list(t["key"]) == ["k1", "k2"] and list(t["size_bytes"]) == [2048, 2048]
    assert list(t["size"]) == ["2.0 KB", "2.0 KB"] and list(t["age"]) == ["2 min", "2 h"]
    assert views.entry_label(entries[0]) == "m · news · 4×16 · gate · k1"
    assert views.entries_table([]).empty


def test_matching_entries():
    entries = [fake_entry("new", 2.0), fake_entry("other", 1.5, seed=1), fake_entry("old", 1.0)]
    params = dict(model="m", calib="news", nsamples=4, seqlen=16, seed=0, site="gate")
    assert views.matching_entries(entries, params) == ["new", "old"]
    assert views.matching_entries(entries, {**params, "site": "product"}) == []


def test_human_units():
    assert views.human_bytes(512) == "512 B" and views.human_bytes(5 * 1024**3) == "5.0 GB"
    assert views.human_age(5) == "5 s" and views.human_age(3 * 86400) == "3 d"


def test_tokenizer_source_and_param_checks(tiny_dir, text_file):
    from neuronrank import UserError

    from neuronrank.config import requests
    from neuronrank.data import specs

    def check_stats_params(params):
        req = requests.StatsRequest(**params)
        req.validate()
        requests.check_inputs(req)

    assert specs.tokenizer_source(str(tiny_dir)) == (str(Path(tiny_dir).resolve()), {})
    good = dict(model=str(tiny_dir), calib=f"file:{text_file}", nsamples=4, seqlen=16, seed=0, site="gate")
    check_stats_params(good)
    for bad, msg in [({"seqlen": 1}, "seqlen"), ({"site": "up"}, "activation site"),
                     ({"calib": "file:/no/such.txt"}, "not found"), ({"calib": "file:"}, "enter the path"), ({"calib": "books"}, "unknown text source"),
                     ({"model": "/no/such/model"}, "not found")]:
        with pytest.raises(UserError, match=msg):
            check_stats_params({**good, **bad})


def test_roles_accepts_the_full_stats_frame(frame):
    # to_frame() has a sum_abs column, which pandas exposes as an attribute: it is still a frame
    full = frame.assign(sum_abs=frame["tf"] * 64)
    labels, counts = scoring.roles(full)
    np.testing.assert_array_equal(counts.to_numpy(), scoring.roles(frame)[1].to_numpy())


def test_picked_neuron_reads_what_a_browser_sends():
    """Chromium sends a scatter point's customdata as an object {"0": layer, "1": neuron, ...}; AppTest a
    list; without customdata the point_index indexes the plotted rows."""
    arrays = {"layer": np.array([0, 0, 1, 1]), "neuron": np.array([0, 1, 0, 1])}
    shown = np.array([1, 3])
    assert views.picked_neuron({"customdata": {"0": 27, "1": 1195, "2": 0.5}}, shown, arrays) == (27, 1195)
    assert views.picked_neuron({"customdata": [3, 4, 0.1]}, shown, arrays) == (3, 4)
    assert views.picked_neuron({"point_index": 1}, shown, arrays) == (1, 1)
    assert views.picked_neuron({"point_index": 7}, shown, arrays) is None


def test_stage_progress_parses_run_messages():
    assert views.stage_progress("dense perplexity: 4,096/8,192 tokens, 900 tok/s, ETA 5s") == \
        ("dense perplexity", "4,096/8,192 tokens, 900 tok/s, ETA 5s", 0.5)
    assert views.stage_progress("converting the GGUF model to safetensors (once, about 20 s on a CPU)") == \
        ("converting the GGUF model to safetensors (once, about 20 s on a CPU)", "", None)
    assert views.stage_progress("pruned perplexity: starting") == ("pruned perplexity", "starting", None)


def test_app_words_replace_cli_flags():
    assert views.app_words("2:4 sparsity prunes 2 of every 4 weights: sparsity_ratio must be 0.5 (got 0.3)") == \
        "2:4 prunes 2 of every 4 weights: set the sparsity ratio to 50%"
    assert views.app_words("pruning_last 40 exceeds the model's 30 layers") == \
        "'Prune only the last N layers' is 40, but the model has 30 layers"
    assert "sparsity_ratio" not in views.app_words("sparsity_ratio must be in [0, 1) (got 1.0)")


def test_critical_vs_chance_is_the_critical_share(frame):
    rt = views.role_tables(frame, quantile=0.9)
    chance = views.critical_vs_chance(rt, 0.9)
    np.testing.assert_allclose(chance["observed"], rt.percent["critical"].to_numpy())
    np.testing.assert_allclose(chance["expected"], 1.0)  # (1 - 0.9)² = 1 %


def test_dead_kept_and_decade_ticks():
    arrays = {"n_active": np.array([0, 1, 500, 900]), "tokens": np.full(4, 1000), "layer": np.zeros(4, int)}
    # dead: active on < 0.1 % of tokens -> the first only (1/1000 is not below 0.1 %)
    assert views.dead_kept(arrays, np.array([5.0, 1.0, 2.0, 3.0]), 0.5) == (1, 1, 1)  # the dead one scores highest
    assert views.dead_kept(arrays, np.array([0.1, 1.0, 2.0, 3.0]), 0.5) == (1, 1, 0)  # lowest: pruned
    assert views.decade_ticks([0.5, 2.7, np.nan]) == [0.0, 1.0, 2.0, 3.0]
    np.testing.assert_allclose(views.decade_ticks([1.0, 1.6]), [1.0, 1.2, 1.4, 1.6])
    assert views.decade_ticks([np.nan]) == []
