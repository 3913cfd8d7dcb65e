"""RIA, OWL's layer sparsity, FLAP and mean compensation on tiny models, each against an independent
recomputation from its formulas (numpy / plain torch on captured activations, not the project's code paths)."""

import numpy as np
import pytest
import torch

from neuronrank.config.requests import PruneRequest
from neuronrank.engine.collect import batched, collect
from neuronrank.engine.models import mlp_blocks
from neuronrank.evaluation.perplexity import perplexity
from neuronrank.prune import prune
from neuronrank.prune.context import MetricInputs, targets
from tests.conftest import make_tiny

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # module order


def linears(layer) -> dict:
    return {"q_proj": layer.self_attn.q_proj, "k_proj": layer.self_attn.k_proj, "v_proj": layer.self_attn.v_proj,
            "o_proj": layer.self_attn.o_proj, "gate_proj": layer.mlp.gate_proj, "up_proj": layer.mlp.up_proj,
            "down_proj": layer.mlp.down_proj}


def capture_inputs(model, windows, layer_idx):
    """{linear name: [windows, seq, in] float64 inputs} of one layer, by a plain forward of the whole model."""
    got, hooks = {}, []
    for name, lin in linears(model.model.layers[layer_idx]).items():
        hooks.append(lin.register_forward_pre_hook(
            lambda m, a, name=name: got.setdefault(name, []).append(a[0].detach().double())))
    with torch.no_grad():
        for w in windows:
            model(input_ids=w[None])
    for h in hooks:
        h.remove()
    return {k: torch.cat(v) for k, v in got.items()}


def ria_metric(w: np.ndarray, x_sq: np.ndarray) -> np.ndarray:
    a = np.abs(w)
    return (a / a.sum(0) + a / a.sum(1, keepdims=True)) * np.sqrt(x_sq)[None, :] ** 0.5


@pytest.fixture
def windows():
    return torch.randint(0, 96, (6, 16), generator=torch.Generator().manual_seed(1))


# --- RIA ---------------------------------------------------------------------------------------


def test_ria_metric_equals_its_formula(windows):
    model = make_tiny(layers=2, inter=64)
    stats = collect(model, batched(windows, 2))
    ctx = MetricInputs(stats=stats)
    from neuronrank.config.methods import METHODS

    for t in targets(model, [0, 1], "all"):
        key = {"gate": "mlp_in", "up": "mlp_in", "down": "down_in", "o": "o_in"}.get(t.kind, "attn_in")
        expect = ria_metric(t.module.weight.detach().double().numpy(), stats.input_sq[key][t.layer])
        got = METHODS["ria"].metric(t.module.weight.detach(), t, ctx)
        np.testing.assert_allclose(got.double().numpy(), expect, rtol=2e-6)


def test_ria_layer_by_layer_equals_an_independent_loop(windows):
    """The whole of RIA's prune_ria as its paper states it: layer by layer, each layer's input norms from the
    already pruned earlier layers, every linear with one threshold per matrix, `<=` the sorted value at
    int(n·r) — recomputed with full-model forwards and numpy."""
    ratio = 0.5
    ours, ref = make_tiny(layers=3, inter=64), make_tiny(layers=3, inter=64)
    prune(ours, PruneRequest(prune_method="ria", sparsity_ratio=ratio, targets="all"), None, windows=windows)
    for i, layer in enumerate(ref.model.layers):
        xs = capture_inputs(ref, windows, i)  # dense within the layer, pruned before it
        for name, lin in linears(layer).items():
            w = lin.weight.detach().numpy().astype(np.float64)
            m = ria_metric(w, (xs[name] ** 2).sum((0, 1)).numpy())
            thr = np.sort(m.ravel())[int(m.size * ratio)]
            with torch.no_grad():
                lin.weight[torch.from_numpy(m <= thr)] = 0
    for a, b in zip(ours.model.layers, ref.model.layers):
        for name in LINEARS:
            assert torch.equal(linears(a)[name].weight == 0, linears(b)[name].weight == 0), name
    # RIA's rule prunes the value at int(n·r) too: one more than half of each matrix (no ties here)
    w = ours.model.layers[0].mlp.up_proj.weight
    assert int((w == 0).sum()) == w.numel() // 2 + 1


def test_ria_per_row_and_n_m(windows):
    model = make_tiny(layers=2, inter=64)
    prune(model, PruneRequest(prune_method="ria", sparsity_ratio=0.3, group="row", calibration="one-pass"),
          collect(model, [windows]))
    for b in mlp_blocks(model):  # per_outneuron: int(in · r) per row
        assert ((b.down.weight == 0).sum(1) == int(64 * 0.3)).all()
        assert ((b.gate.weight == 0).sum(1) == int(32 * 0.3)).all()
    model = make_tiny(layers=2, inter=64)
    prune(model, PruneRequest(prune_method="ria", sparsity_ratio=0.5, sparsity_type="2:4"), None, windows=windows)
    for b in mlp_blocks(model):
        assert ((b.up.weight == 0).reshape(b.up.weight.shape[0], -1, 4).sum(-1) == 2).all()


# --- OWL ---------------------------------------------------------------------------------------


def owl_expected(d, s, lam):
    d = np.array(d)
    r = (d - d.min()) / (d.max() - d.min()) * 2 * lam
    return 1 - (r - r.mean() + 1 - s)


@pytest.mark.parametrize("method", ["wanda", "magnitude", "neuronrank_old", "ria"])
def test_owl_layer_sparsity_equals_its_formula(windows, method):
    model = make_tiny(layers=4, inter=64)
    stats = collect(model, batched(windows, 2))
    dense = {(i, n): lin.weight.detach().double().numpy() for i, ly in enumerate(model.model.layers)
             for n, lin in linears(ly).items()}
    req = PruneRequest(prune_method=method, sparsity_ratio=0.5, layer_sparsity="owl", owl_threshold=3.0,
                       owl_lambda=0.1, calibration="one-pass" if method == "ria" else None)
    info = prune(model, req, stats, windows=windows)
    key = {"gate_proj": "mlp_in", "up_proj": "mlp_in", "down_proj": "down_in", "o_proj": "o_in"}
    score = stats.w_norm * stats.tf * stats.idf  # neuronrank_old's own score (α = β = γ = 1)
    d = []
    for i in range(4):
        if method == "neuronrank_old":  # its own |W_jk|·score_i over gate, up, down
            ms = [np.abs(dense[i, "gate_proj"]) * score[i][:, None], np.abs(dense[i, "up_proj"]) * score[i][:, None],
                  np.abs(dense[i, "down_proj"]) * score[i][None, :]]
        else:  # Wanda's |W|·‖X‖ over every linear of the layer (OWL's D, whatever the base method)
            ms = [np.abs(dense[i, n]) * np.sqrt(stats.input_sq[key.get(n, "attn_in")][i])[None, :] for n in LINEARS]
        flat = np.concatenate([m.ravel() for m in ms])
        d.append((flat > 3.0 * flat.mean()).mean() * 100)
        assert abs(info["owl"]["outlier_percent"][i] - d[-1]) <= 2 / flat.size * 100  # float32 vs float64
    expect = owl_expected(d, 0.5, 0.1)
    np.testing.assert_allclose(info["owl"]["sparsity"], expect, atol=1e-6)
    assert np.mean(info["owl"]["sparsity"]) == pytest.approx(0.5)
    assert max(info["owl"]["sparsity"]) - min(info["owl"]["sparsity"]) == pytest.approx(0.2)  # the spread 2λ
    for i, b in enumerate(mlp_blocks(model)):
        s = info["owl"]["sparsity"][i]
        for lin in (b.gate, b.up, b.down):
            z = (lin.weight == 0)
            if req.comparison_group == "row":  # OWL's per-row int(in · s_l)
                assert (z.sum(1) == int(lin.in_features * s)).all()
            else:  # `<=` the value at int(n · s_l): that many and one more (no ties in a random model)
                assert int(z.sum()) == int(lin.weight.numel() * s) + 1
        assert not (b.attn_projections["q"].weight == 0).any()  # MLP only by default


def test_owl_with_lambda_zero_or_one_layer_is_uniform(windows):
    model = make_tiny(layers=3, inter=64)
    stats = collect(model, [windows])
    info = prune(model, PruneRequest(prune_method="wanda", layer_sparsity="owl", owl_lambda=0.0), stats)
    assert info["owl"]["sparsity"] == pytest.approx([0.5] * 3)
    info = prune(make_tiny(layers=3, inter=64), PruneRequest(prune_method="wanda", layer_sparsity="owl",
                                                            pruning_last=1), stats)
    assert info["owl"]["layers"] == [2] and info["owl"]["sparsity"] == pytest.approx([0.5])


def test_owl_sequential_prunes_each_layer_at_its_ratio(windows):
    model = make_tiny(layers=3, inter=64)
    stats = collect(model, [windows])
    info = prune(model, PruneRequest(prune_method="wanda", layer_sparsity="owl", calibration="sequential",
                                     targets="all"), stats, windows=windows)
    for i, ly in enumerate(model.model.layers):
        for lin in linears(ly).values():
            assert ((lin.weight == 0).sum(1) == int(lin.in_features * info["owl"]["sparsity"][i])).all()


# --- FLAP --------------------------------------------------------------------------------------


def flap_recurrence(xs):
    """FLAP's BiasGPT.add_batch as its paper's code runs it, window by window (x [T, I] each), in float64:
    the running mean, then the fluctuation from the UPDATED mean (its old-mean alias points at the new one)."""
    mean = np.zeros(xs[0].shape[1])
    fluc = np.zeros_like(mean)
    for n, x in enumerate(xs):
        mean = mean * n / (n + 1) + x.mean(0) / (n + 1)
        if n > 0:
            fluc = fluc * (n - 1) / n + ((x - mean) ** 2).sum(0) / (n + 1)
    return mean, fluc


def down_inputs(model, windows):
    """[layer] -> list of [T, I] float64 down_proj inputs per window (plain forwards)."""
    got, hooks = {}, []
    for i, ly in enumerate(model.model.layers):
        hooks.append(ly.mlp.down_proj.register_forward_pre_hook(
            lambda m, a, i=i: got.setdefault(i, []).append(a[0][0].detach().double().numpy())))
    with torch.no_grad():
        for w in windows:
            model(input_ids=w[None])
    for h in hooks:
        h.remove()
    return got


def test_flap_fluctuation_is_its_recurrence_and_folds_across_shards(windows):
    from neuronrank.analysis.neuron_stats import merge

    model = make_tiny(layers=2, inter=64)
    whole = collect(model, batched(windows, 4))
    a = collect(model, batched(windows[:2], 2))
    b = collect(model, batched(windows[2:], 3), first_window=2)
    xs = down_inputs(model, windows)
    for stats in (whole, merge(a, b), merge(b, a)):
        for i in range(2):
            mean, fluc = flap_recurrence(xs[i])
            np.testing.assert_allclose(stats.flap_fluctuation()[i], fluc, rtol=1e-5)
            np.testing.assert_allclose(stats.down_input_mean()[i], mean, rtol=1e-5, atol=1e-9)
            allx = np.concatenate(xs[i])
            np.testing.assert_allclose(stats.down_input_variance()[i], allx.var(0, ddof=1), rtol=1e-5)
    # not a variance: the first window never counts, and the scale is ~T times larger
    assert not np.allclose(whole.flap_fluctuation(), whole.down_input_variance(), rtol=0.1)


def flap_expected(model, stats_fluc, means, ratio):
    """FLAP's AL-AM selection for MLP neurons and its bias, in numpy."""
    wd = [ly.mlp.down_proj.weight.detach().double().numpy() for ly in model.model.layers]
    metric = np.stack([f * (w ** 2).sum(0) for f, w in zip(stats_fluc, wd)])
    z = (metric - metric.mean(1, keepdims=True)) / metric.std(1, ddof=1, keepdims=True)
    flat = z.ravel()
    srt = np.sort(flat)[::-1]
    k = int(np.argmin(np.abs(np.arange(1, flat.size + 1) - flat.size * (1 - ratio))))
    keep = z > srt[k]
    bias = [w @ (m.astype(np.float16).astype(np.float64) * ~kp) for w, m, kp in zip(wd, means, keep)]
    return keep, np.stack(bias)


@pytest.mark.parametrize("fluctuation", ["flap", "variance"])
def test_flap_neurons_and_bias_equal_its_formulas(windows, fluctuation):
    model = make_tiny(layers=3, inter=64)
    stats = collect(model, batched(windows, 2))
    xs = down_inputs(model, windows)
    if fluctuation == "flap":
        fluc = [flap_recurrence(xs[i])[1] for i in range(3)]
    else:
        fluc = [np.concatenate(xs[i]).var(0, ddof=1) for i in range(3)]
    means = [np.concatenate(xs[i]).mean(0) for i in range(3)]
    keep, bias = flap_expected(model, fluc, means, 0.2)
    info = prune(model, PruneRequest(prune_method="flap", sparsity_type="structured", sparsity_ratio=0.2,
                                     fluctuation=fluctuation if fluctuation != "flap" else None), stats)
    got = np.ones_like(keep)
    for layer, dropped in info["dropped"].items():
        got[layer, dropped] = False
    np.testing.assert_array_equal(got, keep)
    assert int(keep.sum()) == round(3 * 64 * 0.8) - 1  # FLAP keeps one fewer than the nearest count
    for i, b in enumerate(mlp_blocks(model)):
        np.testing.assert_allclose(b.down.bias.detach().numpy(), bias[i], rtol=1e-4, atol=1e-6)
        gone = ~torch.from_numpy(keep[i])
        assert (b.gate.weight[gone] == 0).all() and (b.up.weight[gone] == 0).all()


def test_flap_per_layer_is_its_uniform_structure(windows):
    model = make_tiny(layers=3, inter=64)
    info = prune(model, PruneRequest(prune_method="flap", sparsity_type="structured", sparsity_ratio=0.2,
                                     scope="layer", compensate="none"), collect(model, batched(windows, 2)))
    assert set(info["neurons_kept"].values()) == {64 - int(64 * 0.2)}
    assert all(b.down.bias is None for b in mlp_blocks(model))


# --- mean compensation -------------------------------------------------------------------------


def test_mean_compensation_adds_the_pruned_means_and_lowers_the_output_error(windows):
    dense = make_tiny(layers=2, inter=64)
    stats = collect(dense, batched(windows, 3))
    xs = down_inputs(dense, windows)
    outs = {}
    for comp in ("none", "mean"):
        model = make_tiny(layers=2, inter=64)
        info = prune(model, PruneRequest(prune_method="neuronrank_old", sparsity_type="structured", sparsity_ratio=0.3,
                                         compensate=comp), stats)
        outs[comp] = model
    wd = dense.model.layers[0].mlp.down_proj.weight.detach().double().numpy()
    pruned = np.zeros(64, dtype=bool)
    pruned[info["dropped"][0]] = True
    mean = np.concatenate(xs[0]).mean(0)
    np.testing.assert_allclose(outs["mean"].model.layers[0].mlp.down_proj.bias.detach().numpy(),
                               wd[:, pruned] @ mean[pruned], rtol=2e-3, atol=1e-5)  # float16 mean
    assert outs["none"].model.layers[0].mlp.down_proj.bias is None
    # on the calibration tokens the compensated MLP output is closer to the dense one (same inputs: layer 0)
    h = torch.cat([a[0] for a in _mlp_inputs(dense, windows)])
    err = {c: float(((outs[c].model.layers[0].mlp(h) - dense.model.layers[0].mlp(h)) ** 2).mean()) for c in outs}
    assert err["mean"] < err["none"]


def _mlp_inputs(model, windows):
    got = []
    h = model.model.layers[0].mlp.register_forward_pre_hook(lambda m, a: got.append((a[0].detach(),)))
    with torch.no_grad():
        model(input_ids=windows)
    h.remove()
    return got


@pytest.mark.parametrize("method,scope", [("neuronrank_old", "layer"), ("flap", None)])
def test_a_compensated_model_saves_and_reloads_with_the_same_perplexity(tiny_dir, tmp_path, method, scope):
    """Equal counts per layer: sliced (smaller); unequal (flap's global ranking): zeroed shapes. Both carry the
    bias (Llama's mlp_bias) and reload with from_pretrained to the same perplexity."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from neuronrank.prune import export

    model = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    windows = torch.randint(0, 128, (6, 16), generator=torch.Generator().manual_seed(2))
    req = PruneRequest(prune_method=method, sparsity_type="structured", sparsity_ratio=0.25, scope=scope,
                       compensate="mean")
    info = prune(model, req, collect(model, batched(windows, 2)))
    ppl = perplexity(model, windows).ppl
    saved = export.save_model(model, tok, str(tmp_path / "m"), info, req)
    assert "MLP bias" in saved["format"] and ("sliced" in saved["format"]) == (method == "neuronrank_old")
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert back.config.mlp_bias and mlp_blocks(back)[0].down.bias is not None
    assert (back.config.intermediate_size < 48) == (method == "neuronrank_old")
    assert perplexity(back, windows).ppl == pytest.approx(ppl, rel=1e-5)
    assert float(mlp_blocks(back)[0].down.bias.abs().max()) > 0


def test_a_compensated_model_of_a_family_without_mlp_bias_is_not_saved(windows, tmp_path):
    from neuronrank import UserError
    from neuronrank.prune import export

    model = make_tiny("qwen2", layers=2)
    req = PruneRequest(prune_method="magnitude", sparsity_type="structured", sparsity_ratio=0.25, compensate="mean")
    info = prune(model, req, collect(model, [windows]))
    with pytest.raises(UserError, match="cannot be saved: its config has no MLP bias"):
        export.save_model(model, None, str(tmp_path / "m"), info, req)


def test_a_cache_entry_without_the_down_moments_loads_and_is_recomputed_only_when_needed(tiny_dir, text_file):
    """Entries written before the down_proj moments were collected still load and serve every other run; a
    run that needs them (flap, --compensate mean) computes the entry again and replaces it."""
    from dataclasses import replace

    from neuronrank.config.requests import StatsRequest
    from neuronrank.data import stats_cache as store
    from neuronrank.engine.statistics import get_stats

    req = StatsRequest(model=str(tiny_dir), calib=f"file:{text_file}", nsamples=3, seqlen=16, seed=11)
    first = get_stats(req)
    old = replace(first.stats, input_sum={}, fluct={})
    store.delete_entry(first.entry.key)
    store.save_stats(first.entry.params, old)  # what an entry of the earlier format holds
    loaded = get_stats(req)
    assert loaded.cached and not loaded.stats.has_down_moments
    np.testing.assert_array_equal(loaded.stats.sum_abs, first.stats.sum_abs)
    again = get_stats(req, need_moments=True)
    assert not again.cached and again.stats.has_down_moments and again.entry.key == first.entry.key
    assert get_stats(req, need_moments=True).cached  # replaced in place
    np.testing.assert_allclose(again.stats.flap_fluctuation(), first.stats.flap_fluctuation())
