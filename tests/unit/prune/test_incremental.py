"""Incremental NeuronRank-OLD masks (a search's trials): the same booleans as ranking each matrix from
scratch (masks.lowest_mask of the registry's metric), for real statistics, ties and awkward scores."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from neuronrank.config.methods import METHODS
from neuronrank.config.requests import PruneRequest
from neuronrank.engine.collect import collect
from neuronrank.prune import prune
from neuronrank.prune.context import MetricInputs, Target, targets
from neuronrank.prune.incremental import ScaledMasks
from neuronrank.prune.masks import lowest_mask
from tests.conftest import make_tiny


def quantised(model, step=0.05):
    """Weights on a coarse grid, as the embedded Q4_1 model's: |W| ties everywhere."""
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.copy_((p / step).round() * step)
    return model


def score_cases(stats, rng):
    from neuronrank.analysis import scoring

    L, width = stats.n_layers, stats.width

    def sc(a, b, g):
        return scoring.score(stats, a, b, g).reshape(L, width)

    yield "1,1,1", sc(1, 1, 1)
    yield "0,0,0", sc(0, 0, 0)
    for i in range(3):
        yield f"random {i}", sc(*rng.uniform(0, 3, 3))
    yield "10,10,10", sc(10, 10, 10)
    s = sc(1, 1, 1).copy()
    s[:, ::7] = 0
    s[:, 1::5] = s[:, 1:2]
    yield "zeros and equal scores", s
    yield "rounded", np.round(sc(1.5, 1, 2), 1)
    z = np.zeros((L, width))
    z[:, :3] = 1
    yield "mostly zero", z
    s = rng.random((L, width))
    s[:, ::3] = 1e-45
    yield "subnormal", s
    s = rng.random((L, width))
    s[:, ::4] = 1e36
    yield "near float32 max", s
    s = rng.random((L, width))
    s[:, 5] = np.inf
    yield "inf", s
    s = rng.random((L, width))
    s[:, 2] = -0.5
    yield "negative", s


def reference(ts, scores, ratio, stype):
    ctx = MetricInputs(neuron_scores=scores)
    fn = METHODS["neuronrank_old"].metric
    return [lowest_mask(fn(t.module.weight.detach(), t, ctx), ratio, stype, "matrix") for t in ts]


def incremental(prepared, ts, scores, req):
    ctx = MetricInputs(neuron_scores=scores)
    assert prepared.covers(req)
    return [prepared.mask(t, req, ctx.neuron_factor(t, "cpu")) for t in ts]


@pytest.fixture(scope="module")
def setting():
    model = quantised(make_tiny(layers=3, inter=64))
    g = torch.Generator().manual_seed(3)
    stats = collect(model, [torch.randint(0, 96, (4, 16), generator=g)])
    return model, stats, targets(model, [0, 1, 2])


@pytest.mark.parametrize("stype,ratio", [("unstructured", 0.5), ("unstructured", 0.3), ("unstructured", 0.77),
                                         ("2:4", 0.5)])
def test_incremental_masks_equal_the_ranking_from_scratch(setting, stype, ratio):
    model, stats, ts = setting
    req = PruneRequest(prune_method="neuronrank_old", sparsity_ratio=ratio, sparsity_type=stype)
    prepared = ScaledMasks.build(ts, req)
    assert prepared is not None and len(prepared.parts) == len(ts)
    for name, scores in score_cases(stats, np.random.default_rng(0)):
        want = reference(ts, scores, ratio, stype)
        got = incremental(prepared, ts, scores, req)
        if name in ("inf", "negative"):
            assert all(g is None for g in got), name  # the ordinary path takes these
            continue
        for t, g, w in zip(ts, got, want):
            assert g is not None and torch.equal(g, w), (name, t.layer, t.kind)


@pytest.mark.parametrize("stype", ["unstructured", "2:4"])
def test_larger_matrices_with_many_ties(stype):
    """Lines of 512 and 1024 weights (the bracket and the interpolated search take many steps) on a grid
    of 16 values, scores with repeats."""
    torch.manual_seed(0)
    lins = {"gate": nn.Linear(512, 256, bias=False), "down": nn.Linear(256, 512, bias=False)}
    with torch.no_grad():
        for lin in lins.values():
            lin.weight.copy_(torch.randint(-8, 8, lin.weight.shape) * 0.125)
    ts = [Target(0, k, m) for k, m in lins.items()]
    rng = np.random.default_rng(1)
    req = PruneRequest(prune_method="neuronrank_old", sparsity_ratio=0.5, sparsity_type=stype)
    prepared = ScaledMasks.build(ts, req)
    for trial in range(4):
        scores = np.round(rng.random((1, 256)) * 4, 1 if trial % 2 else 6)
        for t, g, w in zip(ts, incremental(prepared, ts, scores, req), reference(ts, scores, 0.5, stype)):
            assert torch.equal(g, w), (trial, t.kind)


@pytest.mark.parametrize("stype", ["unstructured", "2:4"])
def test_prune_with_the_structure_gives_the_same_weights(setting, stype):
    model, stats, _ = setting
    req = PruneRequest(prune_method="neuronrank_old", sparsity_ratio=0.5, sparsity_type=stype, alpha=0.7,
                       beta=1.9, gamma=0.4)
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    prepared = ScaledMasks.build(targets(a, [0, 1, 2]), req)
    prune(a, req, stats, prepared=prepared)
    prune(b, req, stats)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert (a.model.layers[0].mlp.down_proj.weight == 0).float().mean() == pytest.approx(0.5)


def test_what_it_does_not_cover_takes_the_ordinary_path(setting):
    model, stats, ts = setting
    base = PruneRequest(prune_method="neuronrank_old", sparsity_ratio=0.5)
    assert ScaledMasks.build(ts, PruneRequest(prune_method="wanda", sparsity_ratio=0.5)) is None
    assert ScaledMasks.build(ts, PruneRequest(prune_method="neuronrank_old", group="row")) is None
    assert ScaledMasks.build(ts, PruneRequest(prune_method="neuronrank_old", sparsity_type="4:8")) is None
    assert ScaledMasks.build(ts, PruneRequest(prune_method="neuronrank_old", calibration="sequential")) is None
    prepared = ScaledMasks.build(ts, base)
    assert not prepared.covers(PruneRequest(prune_method="magnitude", sparsity_ratio=0.5))
    assert not prepared.covers(PruneRequest(prune_method="neuronrank_old", sparsity_type="2:4"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_zeroing_by_bit_pattern_is_masked_fill_bit_for_bit(dtype):
    from neuronrank.prune.masks import zero_masked_

    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 48, generator=g).to(dtype)
    w[0, :6] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 0.0, 1e-40]).to(dtype)
    mask = torch.rand(64, 48, generator=g) < 0.5
    mask[0, :3] = True
    want = w.clone().masked_fill_(mask, 0)
    got = zero_masked_(w.clone(), mask)
    bits = {8: torch.int64, 4: torch.int32, 2: torch.int16}[w.element_size()]
    assert torch.equal(got.view(bits), want.view(bits))
