"""The Compare view against independent recomputation: Spearman by scipy, the pruned sets and their
Jaccard by sorting, the role transitions by hand."""

import numpy as np
import pandas as pd
import pytest

from neuronrank import UserError
from neuronrank.views import compare
from tests.unit.views.conftest import synthetic_frame


def pair(seed_b=1):
    a = synthetic_frame(n_layers=3, width=50, seed=0, dead_per_layer=2)
    b = synthetic_frame(n_layers=3, width=50, seed=seed_b, dead_per_layer=3)
    # B shares part of A's ranking (a noisy copy), so the correlations are neither 0 nor 1
    b["tf"] = a["tf"] * np.exp(np.random.default_rng(7).normal(0, 0.7, len(a)))
    b.loc[b["n_active"] == 0, "tf"] = 0.0
    return a, b


def test_spearman_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    a, b = pair()
    got = compare.rank_correlations(a, b, 1.0, 1.0, 2.0)
    assert list(got.columns) == ["layer", "tf", "idf", "score"] and len(got) == 3
    sa = a["w_norm"] * a["tf"] * a["idf"] ** 2
    sb = b["w_norm"] * b["tf"] * b["idf"] ** 2
    for layer in range(3):
        m = (a["layer"] == layer).to_numpy()
        for col, x, y in (("tf", a["tf"], b["tf"]), ("idf", a["idf"], b["idf"]), ("score", sa, sb)):
            want = stats.spearmanr(x[m], y[m]).statistic
            assert got.loc[layer, col] == pytest.approx(want, abs=1e-12), (layer, col)
    assert 0.2 < got["tf"].min() and got["tf"].max() < 0.95  # really partial agreement
    same = compare.rank_correlations(a, a, 1, 1, 1)
    np.testing.assert_allclose(same[["tf", "idf", "score"]].to_numpy(), 1.0)


def test_spearman_of_a_constant_layer_is_undefined():
    a = np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]])
    b = np.array([[3.0, 1.0, 2.0], [3.0, 2.0, 1.0]])
    rho = compare.spearman_rows(a, b)
    assert np.isnan(rho[0]) and rho[1] == pytest.approx(-1.0)


def lowest_k(scores, k):
    """The k lowest, ties to the earlier index (a stable sort)."""
    return set(np.argsort(scores, kind="stable")[:k].tolist())


def test_prune_overlap_recomputed_by_sorting():
    a, b = pair()
    res = compare.prune_overlap(a, b, 1.0, 1.0, 1.0, 0.3)
    sa = (a["w_norm"] * a["tf"] * a["idf"]).to_numpy()
    sb = (b["w_norm"] * b["tf"] * b["idf"]).to_numpy()
    union_all, inter_all = 0, 0
    for layer in range(3):
        rows = np.flatnonzero(a["layer"] == layer)
        pa, pb = lowest_k(sa[rows], 15), lowest_k(sb[rows], 15)  # round(0.3 * 50)
        row = res["per_layer"].loc[layer]
        assert row["jaccard"] == pytest.approx(len(pa & pb) / len(pa | pb))
        assert row["shared"] == len(pa & pb) and row["pruned"] == 15
        inter_all += len(pa & pb)
        union_all += len(pa | pb)
    assert res["all_layers"] == pytest.approx(inter_all / union_all)
    ga, gb = lowest_k(sa, 45), lowest_k(sb, 45)  # one threshold across the 150 neurons
    assert res["global"] == pytest.approx(len(ga & gb) / len(ga | gb)) and res["global_shared"] == len(ga & gb)
    assert 0 < res["global"] < 1


def test_chance_jaccard_is_what_random_rankings_share():
    rng = np.random.default_rng(0)
    layers = np.repeat(np.arange(4), 500)
    got = [compare.scoring.overlap(rng.random(2000), rng.random(2000), 0.5, layers)["jaccard"] for _ in range(20)]
    assert np.mean(got) == pytest.approx(compare.chance_jaccard(0.5), abs=0.01)
    assert compare.chance_jaccard(0.5) == pytest.approx(1 / 3) and compare.chance_jaccard(0.0) == 1.0


def roles_by_hand(frame, q):
    tf, idf = frame["tf"].to_numpy().reshape(3, -1), frame["idf"].to_numpy().reshape(3, -1)
    dead = (frame["n_active"].to_numpy() < 0.001 * frame["tokens"].to_numpy()).reshape(3, -1)
    hi_tf = tf > np.quantile(tf, q, axis=1, keepdims=True)
    hi_idf = idf > np.quantile(idf, q, axis=1, keepdims=True)
    out = np.where(hi_tf, np.where(hi_idf, "critical", "important"), np.where(hi_idf, "moderate", "prune-first"))
    return np.where(dead, "dead", out).ravel()


def test_role_transitions_recomputed_by_hand():
    a, b = pair(seed_b=4)
    table, changed = compare.role_transitions(a, b, quantile=0.7)
    ra, rb = roles_by_hand(a, 0.7), roles_by_hand(b, 0.7)
    order = ["critical", "important", "moderate", "prune-first", "dead"]
    want = pd.crosstab(pd.Categorical(ra, order), pd.Categorical(rb, order), dropna=False)
    np.testing.assert_array_equal(table.to_numpy(), want.to_numpy())
    assert list(table.index) == list(table.columns) == order
    assert changed == int((ra != rb).sum()) > 0 and table.to_numpy().sum() == 150
    assert table.loc["dead", "dead"] == 6  # A's two dead per layer are among B's three
    same, none = compare.role_transitions(a, a, quantile=0.7)
    assert none == 0 and (np.diag(same.to_numpy()).sum() == 150)


def test_only_entries_of_the_same_model_compare():
    ident = {"spec": "smollm2-135m", "kind": "alias", "fingerprint": "abc"}
    pa = {"model": "smollm2-135m", "model_identity": ident, "calib": "news", "seed": 0}
    compare.check_comparable(pa, {**pa, "calib": "wiki"}, (30, 1536), (30, 1536))
    with pytest.raises(UserError, match=r"different models \(smollm2-135m and /m/tiny\)"):
        compare.check_comparable(pa, {"model": "/m/tiny", "model_identity": {"spec": "/m/tiny"}})
    with pytest.raises(UserError, match="two different copies of smollm2-135m"):
        compare.check_comparable(pa, {**pa, "model_identity": {**ident, "fingerprint": "def"}})
    with pytest.raises(UserError, match="different shapes"):
        compare.check_comparable(pa, pa, (30, 1536), (2, 48))
    a, b = pair()
    with pytest.raises(UserError, match="same neurons"):
        compare.rank_correlations(a, b.iloc[:100], 1, 1, 1)


def test_param_differences_and_paired_sample():
    pa = {"model": "m", "calib": "news", "nsamples": 64, "seqlen": 256, "seed": 0, "site": "gate"}
    diff = compare.param_differences(pa, {**pa, "calib": "wiki", "site": "product", "skip_first": 0})
    assert diff.to_dict("records") == [{"setting": "calib", "A": "news", "B": "wiki"},
                                       {"setting": "site", "A": "gate", "B": "product"}]
    a, b = pair()
    s = compare.paired_sample(a, b, "idf")
    np.testing.assert_array_equal(s["a"], a["idf"])
    np.testing.assert_array_equal(s["b"], b["idf"])
    small = compare.paired_sample(a, b, "tf", max_points=20)
    assert len(small) == 20 and (small["b"].to_numpy() == b["tf"].to_numpy()[
        small["layer"].to_numpy() * 50 + small["neuron"].to_numpy()]).all()
