"""Scores, roles and overlap against hand-computed values."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neuronrank import UserError
from neuronrank.analysis import scoring


def frame(w, tf, idf, layers=None):
    n = len(w)
    return pd.DataFrame({"layer": layers if layers is not None else np.zeros(n, int), "neuron": np.arange(n),
                         "w_norm": w, "tf": tf, "idf": idf})


def test_score_is_the_product_of_powers():
    f = frame([2.0, 3.0], [0.5, 4.0], [1.0, 2.0])
    np.testing.assert_allclose(scoring.score(f, 1.5, 1.0, 2.0), [2**1.5 * 0.5 * 1, 3**1.5 * 4 * 4])
    np.testing.assert_allclose(scoring.score(f, 1, 0, 0), [2.0, 3.0])  # pure magnitude
    np.testing.assert_allclose(scoring.score(f, 0, 1, 1), [0.5, 8.0])  # pure TF-IDF


def test_exponent_edges():
    f = frame([0.0, 2.0], [0.0, 1.0], [1.0, 3.0])
    # exponent 0 switches the factor off even where the base is 0 (never 0**0 ambiguity)
    np.testing.assert_array_equal(scoring.score(f, 0, 0, 0), [1.0, 1.0])
    # zero TF with a positive exponent gives 0, never NaN
    s = scoring.score(f, 0, 0.5, 1)
    assert s[0] == 0.0 and np.isfinite(s).all()
    for bad in (-0.1, float("nan"), float("inf"), 11, "x"):
        with pytest.raises(UserError, match="must be"):
            scoring.score(f, bad, 1, 1)


def test_roles_by_per_layer_median():
    # layer 0: TF median 2.5, IDF median 2.5
    f = frame([1, 2, 3, 4, 1, 1], [1, 2, 3, 4, 10, 20], [4, 1, 4, 1, 5, 6], layers=[0, 0, 0, 0, 1, 1])
    labels, counts = scoring.roles(f)
    assert list(labels[:4]) == ["moderate", "prune-first", "critical", "important"]
    assert list(labels[4:]) == ["prune-first", "critical"]  # layer 1 has its own medians
    assert counts.loc["all"].sum() == 6 and counts.loc[0, "critical"] == 1 and counts.loc[1, "critical"] == 1
    labels8, counts8 = scoring.roles(f, split_w=True)
    assert labels8[3] == "important / high |W|" and labels8[0] == "moderate / low |W|"
    assert counts8.shape[1] == 8
    labels_g, _ = scoring.roles(f, tf_threshold=5, idf_threshold=3)
    assert list(labels_g) == ["moderate", "prune-first", "moderate", "prune-first", "critical", "critical"]


def test_lowest_prunes_exactly_the_requested_count():
    scores = np.array([5, 1, 1, 1, 3, 2.0])
    m = scoring.lowest(scores, None, 0.5)
    assert m.sum() == 3 and list(np.flatnonzero(m)) == [1, 2, 3]
    layers = np.array([0, 0, 0, 1, 1, 1])
    m = scoring.lowest(np.array([3, 1, 2, 9, 8, 7.0]), layers, 1 / 3)
    assert list(np.flatnonzero(m)) == [1, 5]
    m = scoring.lowest(np.array([3, 1, 2, 9, 8, 7.0]), layers, 1 / 3, per_layer=False)
    assert list(np.flatnonzero(m)) == [1, 2]
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(UserError):
            scoring.lowest(scores, None, bad)


def test_overlap_jaccard():
    a = np.array([1, 2, 3, 4.0])
    b = np.array([1, 2, 4, 3.0])  # same lowest half, other order above it
    o = scoring.overlap(a, b, 0.5)
    assert o["jaccard"] == 1.0 and o["shared"] == 2
    c = np.array([4, 3, 2, 1.0])
    assert scoring.overlap(a, c, 0.5)["jaccard"] == 0.0
    o = scoring.overlap(a, np.array([1, 4, 2, 3.0]), 0.5, layers=np.array([0, 0, 1, 1]), per_layer=False)
    assert o["jaccard"] == pytest.approx(1 / 3) and set(o["per_layer"]) == {0, 1}


def test_score_of_stats_matches_frame(tiny, tiny_windows):
    from neuronrank.engine.collect import collect

    s = collect(tiny, [tiny_windows])
    np.testing.assert_allclose(scoring.score(s, 1.5, 1, 2), scoring.score(s.to_frame(), 1.5, 1, 2))


def test_layer_major_fast_path_equals_the_general_path():
    rng = np.random.default_rng(3)
    layers = np.repeat(np.arange(4), 25)
    a, b = rng.random(100), rng.random(100)
    fast = scoring.overlap(a, b, 0.3, layers=layers)
    perm = rng.permutation(100)  # same rows in another order: the general path
    slow = scoring.overlap(a[perm], b[perm], 0.3, layers=layers[perm])
    assert fast["per_layer"] == pytest.approx(slow["per_layer"]) and fast["jaccard"] == pytest.approx(slow["jaccard"])
    m_fast = scoring.lowest(a, layers, 0.3)
    m_slow = scoring.lowest(a[perm], layers[perm], 0.3)
    assert np.array_equal(m_fast[perm], m_slow)


finite = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(finite, finite, st.floats(1.0, 20.0)), min_size=1, max_size=60),
       st.floats(0, 3), st.floats(0, 3), st.floats(0, 3), st.floats(0, 0.99))
def test_scores_finite_nonnegative_and_ratio_met(rows, a, b, g, ratio):
    w, tf, idf = map(np.array, zip(*rows))
    import pandas as pd

    frame = pd.DataFrame({"w_norm": w, "tf": tf, "idf": idf, "layer": 0})
    s = scoring.score(frame, a, b, g)
    assert np.isfinite(s).all() and (s >= 0).all()
    mask = scoring.lowest(s, None, ratio)
    assert mask.sum() == round(ratio * len(s))
