"""neuronrank.views.explorer: the numbers the Exponents page shows, checked against direct numpy recomputation."""

import numpy as np
import pytest

from neuronrank.analysis import scoring
from neuronrank.views import explorer as views


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


# --- roles ----------------------------------------------------------------------------------


# --- what the browser gets, and ties at the cut ---------------------------------------------------


def test_browser_columns_are_the_scored_columns(frame, arrays):
    cols = views.browser_columns(arrays)
    assert list(cols) == ["w", "tf", "idf", "wanda"]
    assert all(c.dtype == np.float64 and c.flags.c_contiguous and len(c) == len(frame) for c in cols.values())
    np.testing.assert_array_equal(cols["w"], frame["w_norm"])
    np.testing.assert_array_equal(cols["wanda"], arrays["wanda"])
    # the browser derives layer and neuron from the order: another order is refused
    shuffled = {k: v[::-1].copy() for k, v in arrays.items()}
    with pytest.raises(ValueError):
        views.browser_columns(shuffled)


def test_ties_at_cut_counts_what_the_row_order_chose(arrays):
    layers = arrays["layer"]
    n = len(layers)
    # every score equal (α = β = γ = 0): the whole pruned set is chosen by position
    flat = scoring.score(arrays, 0, 0, 0)
    assert views.ties_at_cut(flat, layers, 0.5) == {"tied": n, "by_order": n // 2, "pruned": n // 2}
    per = views.ties_at_cut(flat, layers, 0.5, per_layer=True)
    assert per == {"tied": n, "by_order": n // 2, "pruned": n // 2}
    # distinct scores (β = 0: the fixture's dead neurons have TF = 0): nothing chosen by order
    s = scoring.score(arrays, 1, 0, 1)
    assert len(np.unique(s)) == n
    assert views.ties_at_cut(s, layers, 0.3)["by_order"] == 0
    # 10 zeros in a layer of 40 and a cut inside them: 6 of the 10 are pruned by position
    s = s.copy()
    s[:10] = 0.0
    t = views.ties_at_cut(s, layers, 0.15, per_layer=True)  # k = 6 per layer
    assert t["by_order"] >= 6 and t["tied"] >= 10
    mask = scoring.lowest(s, layers, 0.15, per_layer=True)
    assert mask[:6].all() and not mask[6:10].any()  # the earliest rows among the tied zeros
    # a cut just past the ties: they are all pruned, the order decided nothing
    assert views.ties_at_cut(s[:40], layers[:40], 0.3)["by_order"] == 0
