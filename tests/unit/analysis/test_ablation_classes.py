"""Which neurons a role ablation zeroes: the Roles page's classes (dead neurons in their own class only),
layer bands, single neurons, and random controls with the class's per-layer counts."""

import numpy as np
import pytest

from neuronrank import UserError
from neuronrank.analysis import ablation, scoring
from neuronrank.views import roles
from tests.unit.views.conftest import synthetic_frame


@pytest.fixture
def frame():
    return synthetic_frame(n_layers=4, width=60, seed=3, dead_per_layer=3)


def test_classes_are_the_roles_pages_role_table(frame):
    """Per-layer quantile 0.9 (the page's default) with the dead class on: the same labels the Roles page's
    role table gives, row for row."""
    masks = ablation.class_masks(frame)
    page = roles.role_tables(frame, quantile=0.9, dead_below=scoring.DEAD_BELOW)
    labels = page.labels.reshape(4, 60)
    for cls in ablation.CLASSES:
        np.testing.assert_array_equal(masks[cls], labels == cls)
    # every neuron in exactly one class; the dead ones only in "dead"
    assert (sum(m.astype(int) for m in masks.values()) == 1).all()
    dead = (frame["n_active"].to_numpy() < 0.001 * frame["tokens"].to_numpy()).reshape(4, 60)
    np.testing.assert_array_equal(masks["dead"], dead)
    assert masks["dead"].sum() == 12


def test_classes_recomputed_by_hand(frame):
    """Independently: high = strictly above the layer's 0.8-quantile, dead apart."""
    masks = ablation.class_masks(frame, quantile=0.8)
    tf = frame["tf"].to_numpy().reshape(4, 60)
    idf = frame["idf"].to_numpy().reshape(4, 60)
    dead = (frame["n_active"].to_numpy() == 0).reshape(4, 60)  # n_active 0 or >= 1 of 64 tokens here
    hi_tf = tf > np.quantile(tf, 0.8, axis=1, keepdims=True)
    hi_idf = idf > np.quantile(idf, 0.8, axis=1, keepdims=True)
    np.testing.assert_array_equal(masks["critical"], hi_tf & hi_idf & ~dead)
    np.testing.assert_array_equal(masks["important"], hi_tf & ~hi_idf & ~dead)
    np.testing.assert_array_equal(masks["moderate"], ~hi_tf & hi_idf & ~dead)
    np.testing.assert_array_equal(masks["prune-first"], ~hi_tf & ~hi_idf & ~dead)


def test_global_thresholds(frame):
    t, i = float(np.median(frame["tf"])), float(np.median(frame["idf"]))
    masks = ablation.class_masks(frame, ["critical"], tf_threshold=t, idf_threshold=i)
    tf, idf = frame["tf"].to_numpy(), frame["idf"].to_numpy()
    dead = frame["n_active"].to_numpy() == 0
    np.testing.assert_array_equal(masks["critical"].ravel(), (tf > t) & (idf > i) & ~dead)
    assert list(masks) == ["critical"]


def test_random_control_keeps_per_layer_counts_and_differs(frame):
    mask = ablation.class_masks(frame)["critical"]
    seed = ablation.control_seed(0, "critical", None, 0)
    control = ablation.random_like(mask, seed)
    np.testing.assert_array_equal(control.sum(axis=1), mask.sum(axis=1))
    assert mask.sum() > 0 and not np.array_equal(control, mask)
    # seeded: the same seed gives the same set; another control, or another class, another set
    np.testing.assert_array_equal(ablation.random_like(mask, ablation.control_seed(0, "critical", None, 0)), control)
    assert not np.array_equal(ablation.random_like(mask, ablation.control_seed(0, "critical", None, 1)), control)
    assert not np.array_equal(ablation.random_like(mask, ablation.control_seed(0, "moderate", None, 0)), control)
    assert not np.array_equal(ablation.random_like(mask, ablation.control_seed(1, "critical", None, 0)), control)
    # in a band: only the band's layers
    band = ablation.Band(1, 2)
    banded = ablation.in_band(mask, band)
    assert banded[[0, 3]].sum() == 0 and banded[1:3].sum() == mask[1:3].sum()
    c2 = ablation.random_like(banded, ablation.control_seed(0, "critical", band, 0))
    np.testing.assert_array_equal(c2.sum(axis=1), banded.sum(axis=1))


def test_random_control_is_uniform_over_the_layer():
    """Over many seeds every neuron of a layer is drawn about equally often (k/width each)."""
    mask = np.zeros((1, 20), dtype=bool)
    mask[0, :5] = True
    hits = sum(ablation.random_like(mask, s).astype(int) for s in range(2000))[0]
    assert hits.sum() == 5 * 2000
    np.testing.assert_allclose(hits / 2000, 0.25, atol=0.05)


@pytest.mark.parametrize("text,want", [
    ("0-9", [(0, 9)]), ("0-9,10-19", [(0, 9), (10, 19)]), (["0-4", "5"], [(0, 4), (5, 5)]), (" 3 - 7 ", [(3, 7)]),
    (None, []), ("", []),
])
def test_bands(text, want):
    assert [(b.lo, b.hi) for b in ablation.parse_bands(text, 30)] == want


@pytest.mark.parametrize("text,needle", [
    ("9-3", "reversed"), ("a-b", "write A-B"), ("0-30", "layers 0-29"), ("0-3,0-3", "twice"), ("-1", "write A-B"),
])
def test_bad_bands(text, needle):
    with pytest.raises(UserError, match=needle):
        ablation.parse_bands(text, 30)


def test_neurons_and_classes_text():
    assert ablation.parse_neurons("3:17, 10:5,3:17") == ((3, 17), (10, 5))
    for text, needle in (("3-17", "LAYER:NEURON"), ("30:1", "layers 0-29"), ("2:1536", "neurons 0-1535")):
        with pytest.raises(UserError, match=needle):
            ablation.parse_neurons(text, 30, 1536)
    assert ablation.parse_classes("dead, Critical") == ("critical", "dead")  # the report's order
    assert ablation.parse_classes("none") == () and ablation.parse_classes("") == ()
    with pytest.raises(UserError, match="unknown role class 'vital'"):
        ablation.parse_classes("critical,vital")


def test_spread():
    assert ablation.spread([]) == (None, None)
    assert ablation.spread([2.0]) == (2.0, None)
    mean, sd = ablation.spread([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3) and sd == pytest.approx(np.std([1, 2, 4], ddof=1))
    assert ablation.spread([1.0, float("inf")]) == (float("inf"), None)
