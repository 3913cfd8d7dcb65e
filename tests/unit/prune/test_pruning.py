"""Pruning masks, exact sparsity, method metrics recomputed by hand, structured export, perplexity."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst
import torch

from neuronrank import UserError
from neuronrank.analysis import scoring
from neuronrank.evaluation.perplexity import perplexity
from neuronrank.engine.models import mlp_blocks
from neuronrank.config.requests import PruneRequest
from neuronrank.config.methods import METHODS
from neuronrank.prune import prune, sparsity_report
from neuronrank.prune.masks import lowest_mask
from neuronrank.prune.structured import slice_structured
from neuronrank.engine.collect import collect
from tests.conftest import make_tiny


@pytest.fixture
def model_and_stats(tiny_windows):
    model = make_tiny(layers=3, inter=64)
    return model, collect(model, [tiny_windows])


def weights(model):
    return {(b.layer, r): getattr(b, r).weight.detach().clone() for b in mlp_blocks(model) for r in ("gate", "up", "down")}


@pytest.mark.parametrize("method", [m for m in METHODS if "unstructured" in METHODS[m].sparsity_types
                                    and METHODS[m].tie_rule == "exact"])  # ria: its own <= rule (test_baselines)
def test_unstructured_meets_ratio_exactly_per_matrix(model_and_stats, tiny_windows, method):
    model, stats = model_and_stats
    prune(model, PruneRequest(prune_method=method, sparsity_ratio=0.3, group="matrix"), stats, windows=tiny_windows)
    for b in mlp_blocks(model):
        for lin in (b.gate, b.up, b.down):
            assert int((lin.weight == 0).sum()) == round(0.3 * lin.weight.numel())
        for lin in b.attn_projections.values():
            assert int((lin.weight == 0).sum()) == 0  # MLP only by default


def test_neuronrank_mask_equals_hand_computed_threshold(model_and_stats):
    model, stats = model_and_stats
    before = weights(model)
    a, b_, g = 1.5, 1.0, 2.0
    prune(model, PruneRequest(prune_method="neuronrank_old", sparsity_ratio=0.5, alpha=a, beta=b_, gamma=g), stats)
    s = (stats.w_norm ** a) * (stats.tf ** b_) * (stats.idf ** g)  # independent of scoring.score
    for (layer, role), w in before.items():
        w = w.double().numpy()
        metric = np.abs(w) * (s[layer][:, None] if role != "down" else s[layer][None, :])
        k = round(0.5 * w.size)
        expect = np.zeros(w.size, bool)
        expect[np.argsort(metric.ravel(), kind="stable")[:k]] = True
        got = (getattr(mlp_blocks(model)[layer], role).weight == 0).numpy().ravel()
        # ties at the threshold may break differently; everything strictly below must be pruned
        thr = np.sort(metric.ravel())[k - 1]
        assert got[metric.ravel() < thr].all() and not got[metric.ravel() > thr].any()
        assert got.sum() == expect.sum()


@pytest.mark.parametrize("group", [None, "row"])
def test_wanda_row_groups_use_input_norms(model_and_stats, group):
    model, stats = model_and_stats
    before = weights(model)
    prune(model, PruneRequest(prune_method="wanda", sparsity_ratio=0.5, group=group), stats)
    for (layer, role), w in before.items():
        key = "down_in" if role == "down" else "mlp_in"
        metric = np.abs(w.double().numpy()) * np.sqrt(stats.input_sq[key][layer])[None, :]
        got = (getattr(mlp_blocks(model)[layer], role).weight == 0).numpy()
        k = round(0.5 * w.shape[1])
        assert (got.sum(1) == k).all()
        for r in range(w.shape[0]):
            thr = np.sort(metric[r])[k - 1]
            assert got[r][metric[r] < thr].all() and not got[r][metric[r] > thr].any()


@pytest.mark.parametrize("nm", ["2:4", "4:8"])
def test_n_m_sparsity(model_and_stats, nm):
    model, stats = model_and_stats
    prune(model, PruneRequest(prune_method="wanda", sparsity_ratio=0.5, sparsity_type=nm), stats)
    n, m = map(int, nm.split(":"))
    for b in mlp_blocks(model):
        z = (b.gate.weight == 0).reshape(b.gate.weight.shape[0], -1, m).sum(-1)
        assert (z == n).all()


@pytest.mark.parametrize("method", [m for m in METHODS if METHODS[m].neuron_score  # sparsegpt: none
                                    and METHODS[m].tie_rule == "exact"])  # flap: its own rule (test_baselines)
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_structured_removes_whole_neurons(model_and_stats, method, scope):
    model, stats = model_and_stats
    info = prune(model, PruneRequest(prune_method=method, sparsity_ratio=0.25, sparsity_type="structured", scope=scope), stats)
    total = 0
    for b in mlp_blocks(model):
        dead_rows = (b.gate.weight == 0).all(1) & (b.up.weight == 0).all(1) & (b.down.weight == 0).all(0)
        if scope == "layer":
            assert int(dead_rows.sum()) == 16 == 64 - info["neurons_kept"][b.layer]
        total += int(dead_rows.sum())
    assert total == round(0.25 * 3 * 64)
    if method == "neuronrank_old" and scope == "layer":
        s = scoring.score(stats, 1, 1, 1).reshape(3, 64)
        for layer, dropped in info["dropped"].items():
            assert set(dropped) == set(np.argsort(s[layer], kind="stable")[:16])


def test_pruning_last_touches_only_the_last_layers(model_and_stats):
    model, stats = model_and_stats
    before = weights(model)
    info = prune(model, PruneRequest(prune_method="magnitude", sparsity_ratio=0.5, pruning_last=1), stats)
    assert info["layers"] == [2]
    for (layer, role), w in before.items():
        now = getattr(mlp_blocks(model)[layer], role).weight
        assert torch.equal(now, w) == (layer != 2)


def test_targets_all_adds_attention(model_and_stats):
    model, stats = model_and_stats
    prune(model, PruneRequest(prune_method="wanda", sparsity_ratio=0.5, targets="all"), stats)
    rep = sparsity_report(model)
    assert rep["attention"] == pytest.approx(0.5) and rep["mlp"] == pytest.approx(0.5)
    with pytest.raises(UserError, match="not defined for neuronrank_old"):
        prune(model, PruneRequest(prune_method="neuronrank_old", targets="all"), stats)


def test_random_is_seeded(tiny_windows):
    masks = []
    for seed in (1, 1, 2):
        m = make_tiny()
        prune(m, PruneRequest(prune_method="random", sparsity_ratio=0.5, seed=seed))
        masks.append(mlp_blocks(m)[0].gate.weight == 0)
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])


@pytest.mark.parametrize("spec,needle", [
    (dict(sparsity_ratio=1.0), "in \\[0, 1\\)"),
    (dict(sparsity_ratio=float("nan")), "in \\[0, 1\\)"),
    (dict(sparsity_ratio=-0.1), "in \\[0, 1\\)"),
    (dict(sparsity_type="2:4", sparsity_ratio=0.3), "must be 0.5"),
    (dict(pruning_last=0), "at least 1"),
    (dict(pruning_last=9), "exceeds the model's 3 layers"),
    (dict(alpha=-1), "alpha must be between"),
    (dict(prune_method="obc"), "unknown pruning method"),
])
def test_bad_specs(model_and_stats, spec, needle):
    model, stats = model_and_stats
    with pytest.raises(UserError, match=needle):
        prune(model, PruneRequest(**spec), stats)


def test_lowest_mask_ties_give_exact_count():
    m = lowest_mask(torch.zeros(4, 8), 0.5)
    assert int(m.sum()) == 16


def test_perplexity_equals_hf_loss(tiny_windows):
    model = make_tiny(layers=2)
    ours = perplexity(model, tiny_windows, batch_size=4)
    with torch.no_grad():
        losses = [model(input_ids=w[None], labels=w[None]).loss.item() for w in tiny_windows]
    assert ours.ppl == pytest.approx(math.exp(np.mean(losses)), rel=1e-4)
    assert ours.tokens == tiny_windows.shape[0] * (tiny_windows.shape[1] - 1)
    assert ours.windows == 6 and ours.seqlen == 16


def test_structured_export_reloads_smaller_with_same_perplexity(model_and_stats, tmp_path, tiny_windows):
    from transformers import AutoModelForCausalLM

    model, stats = model_and_stats
    info = prune(model, PruneRequest(prune_method="neuronrank_old", sparsity_ratio=0.25, sparsity_type="structured"), stats)
    zeroed = perplexity(model, tiny_windows).ppl
    slice_structured(model, info["dropped"])
    model.save_pretrained(tmp_path)
    small = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert small.config.intermediate_size == 48 and mlp_blocks(small)[0].gate.weight.shape == (48, 32)
    assert perplexity(small, tiny_windows).ppl == pytest.approx(zeroed, rel=1e-5)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in make_tiny(layers=3, inter=64).parameters())


# --- the per-matrix threshold kernel ------------------------------------------------------------


def _old_topk_mask(metric, ratio):
    """The previous implementation: topk(k) of the flattened matrix (tie order unspecified)."""
    mask = torch.zeros(metric.numel(), dtype=torch.bool)
    k = int(round(ratio * metric.numel()))
    if k:
        mask[metric.reshape(-1).topk(k, largest=False).indices] = True
    return mask.view(metric.shape)


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.3, 0.5, 0.77, 0.999])
def test_threshold_mask_identical_to_topk_without_ties(ratio):
    g = torch.Generator().manual_seed(3)
    for shape in [(1, 1), (7, 13), (48, 32), (64, 96)]:
        metric = torch.rand(shape, generator=g)
        assert torch.equal(lowest_mask(metric, ratio), _old_topk_mask(metric, ratio))


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.6])
def test_threshold_mask_with_ties_exact_count_lowest_index_first(ratio):
    """Ties (Q4 weights, bf16): the old topk picked tied entries in an unspecified order; now the same
    count, the same entries strictly below / above the threshold, and ties by lowest flat index."""
    g = torch.Generator().manual_seed(5)
    for levels in (2, 3, 16):
        metric = torch.randint(0, levels, (24, 40), generator=g).float()
        got, old = lowest_mask(metric, ratio), _old_topk_mask(metric, ratio)
        k = round(ratio * metric.numel())
        assert int(got.sum()) == int(old.sum()) == k
        thr = metric.reshape(-1).sort().values[k - 1]
        assert torch.equal(got[metric < thr], old[metric < thr]) and got[metric < thr].all()
        assert not got[metric > thr].any() and not old[metric > thr].any()
        stable = torch.zeros(metric.numel(), dtype=torch.bool)
        stable[torch.sort(metric.reshape(-1), stable=True).indices[:k]] = True
        assert torch.equal(got.reshape(-1), stable)
        assert torch.equal(lowest_mask(metric, ratio), got)  # deterministic


def test_low_precision_metric_same_mask_as_float32():
    w = (torch.randn(32, 48, generator=torch.Generator().manual_seed(1)) * 0.1).bfloat16()  # many ties
    for st, group in (("unstructured", "matrix"), ("unstructured", "row"), ("2:4", "matrix")):
        a = lowest_mask(w.abs(), 0.5, st, group)
        b = lowest_mask(w.float().abs(), 0.5, st, group)
        assert torch.equal(a, b), (st, group)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "neuronrank_old"])
def test_prune_masks_identical_to_previous_float32_metric_path(method, tiny_windows):
    """The metrics now take the weight in its own dtype; masks equal the old float32-copy path."""
    from neuronrank.prune.context import MetricInputs, targets

    model = make_tiny(layers=2, inter=64)
    stats = collect(model, [tiny_windows])
    ctx = MetricInputs(stats=stats)
    ctx.neuron_scores = scoring.score(stats, 1.0, 1.0, 1.0).reshape(stats.n_layers, stats.width)
    fn = METHODS[method].metric
    for dtype in (torch.float32, torch.bfloat16):
        for t in targets(model, [0, 1]):
            w = t.module.weight.detach().to(dtype)
            new = fn(w, t, ctx)
            old = fn(w.float(), t, ctx).float()
            assert torch.equal(new.float(), old)
            assert torch.equal(lowest_mask(new, 0.5), lowest_mask(old, 0.5))


@settings(max_examples=40, deadline=None)
@given(hst.integers(1, 12), hst.integers(1, 6), hst.floats(0, 0.99), hst.sampled_from(["matrix", "row"]),
       hst.integers(0, 2**31 - 1))
def test_mask_prunes_exactly_the_ratio(rows, blocks, ratio, group, seed):
    g = torch.Generator().manual_seed(seed)
    metric = torch.rand(rows, blocks * 4, generator=g).round(decimals=1)  # many ties
    mask = lowest_mask(metric, ratio, "unstructured", group)
    if group == "matrix":
        assert int(mask.sum()) == round(ratio * metric.numel())
    else:
        assert (mask.sum(1) == round(ratio * metric.shape[1])).all()
    kept, pruned = metric[~mask], metric[mask]
    if pruned.numel() and kept.numel() and group == "matrix":
        assert pruned.max() <= kept.min()
    nm = lowest_mask(metric, 0.5, "2:4")
    assert (nm.reshape(rows, -1, 4).sum(-1) == 2).all()
