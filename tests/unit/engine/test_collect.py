"""Statistics on tiny random models against an independent recomputation from captured activations."""

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from neuronrank import UserError
from neuronrank.engine.models import mlp_blocks
from neuronrank.analysis.neuron_stats import merge
from neuronrank.engine.collect import batched, collect
from tests.conftest import FAMILIES, make_tiny


def capture(model, windows):
    """Run the full model (not our code path) and keep every layer's gate pre-activation, up output
    and inputs, then compute everything by hand in float64."""
    store = {}
    hooks = []
    layers = model.model.layers
    for i, layer in enumerate(layers):
        mlp = layer.mlp
        hooks.append(mlp.gate_proj.register_forward_hook(
            lambda m, a, o, i=i: store.setdefault(("gate", i), []).append((a[0].detach(), o.detach()))))
        hooks.append(mlp.up_proj.register_forward_hook(
            lambda m, a, o, i=i: store.setdefault(("up", i), []).append(o.detach())))
        hooks.append(layer.self_attn.o_proj.register_forward_hook(
            lambda m, a, o, i=i: store.setdefault(("o", i), []).append(a[0].detach())))
    with torch.no_grad():
        model(input_ids=windows)
    for h in hooks:
        h.remove()
    return store


def reference(model, windows, site):
    store = capture(model, windows)
    out = []
    for i, layer in enumerate(model.model.layers):
        x, g = store[("gate", i)][0]
        u = store[("up", i)][0]
        act = layer.mlp.act_fn(g)
        a = (act if site == "gate" else act * u).double().reshape(-1, g.shape[-1])
        T = a.shape[0]
        p = (act * u).double().reshape(-1, g.shape[-1])
        out.append(dict(
            tf=a.abs().mean(0).numpy(),
            n_active=(a > 0).sum(0).numpy(),
            idf=np.log((T + 1) / ((a > 0).sum(0).numpy() + 1)) + 1,
            mean=a.mean(0).numpy(),
            std=a.std(0, unbiased=False).numpy(),
            w=layer.mlp.gate_proj.weight.detach().double().norm(dim=1).numpy(),
            x_in=x.double().reshape(-1, x.shape[-1]).pow(2).sum(0).numpy(),
            x_down=p.pow(2).sum(0).numpy(),
            x_o=store[("o", i)][0].double().reshape(-1, store[("o", i)][0].shape[-1]).pow(2).sum(0).numpy(),
            a=a.reshape(windows.shape[0], windows.shape[1], -1).numpy(),
            T=T,
        ))
    return out


@pytest.mark.parametrize("site", ["gate", "product"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_stats_match_independent_recomputation(family, site, tiny_windows):
    model = make_tiny(family)
    stats = collect(model, batched(tiny_windows, 4), site=site, topk=3)
    ref = reference(model, tiny_windows, site)
    assert stats.n_layers == 2 and stats.width == 48
    for i, r in enumerate(ref):
        assert stats.tokens[i] == r["T"] == tiny_windows.numel()
        np.testing.assert_allclose(stats.tf[i], r["tf"], rtol=1e-6, atol=1e-9)
        np.testing.assert_array_equal(stats.n_active[i], r["n_active"])
        np.testing.assert_allclose(stats.idf[i], r["idf"], rtol=1e-12)
        np.testing.assert_allclose(stats.w_norm[i], r["w"], rtol=1e-6)
        down = model.model.layers[i].mlp.down_proj.weight.detach().double()
        np.testing.assert_allclose(stats.down_abs_mean[i], down.abs().mean(0).numpy(), rtol=1e-6)
        np.testing.assert_allclose(stats.down_norm[i], down.norm(dim=0).numpy(), rtol=1e-6)
        np.testing.assert_allclose(stats.mean[i], r["mean"], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(stats.std[i], r["std"], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(stats.input_sq["mlp_in"][i], r["x_in"], rtol=1e-5)
        np.testing.assert_allclose(stats.input_sq["down_in"][i], r["x_down"], rtol=1e-5)
        np.testing.assert_allclose(stats.input_sq["o_in"][i], r["x_o"], rtol=1e-5)
        # top-k: the largest per-window maxima, and the window/position really hold that value
        a = r["a"]
        win_max = a.max(axis=1)  # [windows, neurons]
        expect = -np.sort(-win_max, axis=0)[:3].T
        np.testing.assert_allclose(stats.top_vals[i], expect, rtol=1e-5)
        n = np.arange(stats.width)[:, None]
        at = a[stats.top_window[i], stats.top_pos[i], n]
        np.testing.assert_allclose(at, stats.top_vals[i], rtol=1e-5)
    # the frame is the contract table, layer-major
    frame = stats.to_frame()
    assert list(frame.columns[:7]) == ["layer", "neuron", "tf", "idf", "n_active", "tokens", "w_norm"]
    assert len(frame) == 2 * 48
    np.testing.assert_allclose(frame["tf"].to_numpy()[48:], ref[1]["tf"], rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(stats.windows, tiny_windows.numpy())


def test_merge_of_shards_equals_single_pass(tiny, tiny_windows):
    whole = collect(tiny, batched(tiny_windows, 2), topk=4)
    a = collect(tiny, batched(tiny_windows[:2], 2), topk=4)
    b = collect(tiny, batched(tiny_windows[2:], 2), topk=4, first_window=2)
    for m in (merge(a, b), merge(b, a)):  # order of arguments does not matter
        for f in ("sum_abs", "sum_act", "sum_sq"):
            np.testing.assert_allclose(getattr(m, f), getattr(whole, f), rtol=1e-12)
        np.testing.assert_array_equal(m.n_active, whole.n_active)
        np.testing.assert_array_equal(m.tokens, whole.tokens)
        np.testing.assert_allclose(m.tf, whole.tf, rtol=1e-12)
        np.testing.assert_array_equal(m.top_vals, whole.top_vals)
        np.testing.assert_array_equal(m.top_window, whole.top_window)
        np.testing.assert_array_equal(m.top_pos, whole.top_pos)
        np.testing.assert_array_equal(m.windows, whole.windows)
        for k in whole.input_sq:
            np.testing.assert_allclose(m.input_sq[k], whole.input_sq[k], rtol=1e-12)


def test_batch_size_does_not_change_numbers(tiny, tiny_windows):
    one = collect(tiny, batched(tiny_windows, 1))
    six = collect(tiny, batched(tiny_windows, 6))
    np.testing.assert_allclose(one.tf, six.tf, rtol=1e-6)
    np.testing.assert_array_equal(one.n_active, six.n_active)


def test_idf_edges():
    from neuronrank.engine.collect import NeuronStats

    T = 10
    z = np.zeros((1, 3))
    s = NeuronStats(site="gate", sum_abs=np.array([[0.0, 5.0, 10.0]]), sum_act=z, sum_sq=z,
                    n_active=np.array([[0, 5, 10]]), tokens=np.array([T]), w_norm=np.ones((1, 3)),
                    up_norm=z, down_norm=z, down_abs_mean=z, input_sq={}, top_vals=z[..., None], top_window=z[..., None],
                    top_pos=z[..., None])
    # never active: ln(T+1)+1 (most selective); always active: exactly 1
    np.testing.assert_allclose(s.idf[0], [np.log(11) + 1, np.log(11 / 6) + 1, 1.0])
    np.testing.assert_allclose(s.tf[0], [0.0, 0.5, 1.0])


def test_hooks_are_removed_even_when_the_pass_fails(tiny):
    bad = [torch.randint(0, 96, (2, 8)), torch.full((2, 8), 10_000)]  # token id out of range
    with pytest.raises(IndexError):
        collect(tiny, bad)
    for b in mlp_blocks(tiny):
        for m in (b.gate, b.up, b.down, b.act_fn, *b.attn_projections.values()):
            assert not m._forward_hooks and not m._forward_pre_hooks


def test_shared_activation_module_is_recomputed_per_layer(tiny_windows):
    """If one act_fn instance serves all layers, hooking it would mix layers: we must not."""
    model = make_tiny()
    shared = model.model.layers[0].mlp.act_fn
    for layer in model.model.layers:
        layer.mlp.act_fn = shared
    stats = collect(model, [tiny_windows])
    ref = reference(model, tiny_windows, "gate")
    for i in range(2):
        np.testing.assert_allclose(stats.tf[i], ref[i]["tf"], rtol=1e-6)


def test_model_without_gated_mlp_is_refused():
    cfg = AutoConfig.for_model("gpt2", n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32)
    model = AutoModelForCausalLM.from_config(cfg)
    with pytest.raises(UserError, match="gated MLP.*supported: Llama"):
        mlp_blocks(model)


def test_unknown_site_is_refused(tiny, tiny_windows):
    with pytest.raises(UserError, match="unknown activation site"):
        collect(tiny, [tiny_windows], site="resid")


# --- the per-batch kernels: every path against float64 by hand --------------------------------


def _by_hand(a3):
    a = a3.double().reshape(-1, a3.shape[-1])
    return torch.stack([a.sum(0), a.abs().sum(0), (a * a).sum(0), (a > 0).sum(0).double()])


def _awkward_activation(dtype=torch.float32, W=3, S=7, n=11, seed=0):
    """Exact zeros, negative zeros, ties of the window maximum: what the fast paths must get right."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(W, S, n, generator=g)
    a[:, ::3, :] = 0.0
    a[0, 1, :] = -0.0
    a[1, 2, :] = a[1, 5, :] = 4.0  # the window max at two positions: the first one is reported
    a[2, :, 0] = -1.0  # a neuron never active in a window
    return a.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_activation_kernels_match_float64(dtype):
    from neuronrank.engine.kernels import _fused_sums, activation_sums

    a3 = _awkward_activation(dtype)
    ref = _by_hand(a3)
    tol = dict(rtol=1e-6, atol=1e-6)
    for fn in (activation_sums, _fused_sums):  # _fused_sums uncompiled: the graph torch.compile gets
        sums, (vals, pos) = fn(a3, True)
        torch.testing.assert_close(sums.double(), ref, **tol)
        assert torch.equal(sums[3], sums[3].round())  # counts are exact integers
        assert torch.equal(sums[3].double(), ref[3])  # a == 0 (and -0.0) is not active
        v, i = a3.max(dim=1)
        assert torch.equal(vals, v)
        assert torch.equal(a3.gather(1, pos[:, None]).squeeze(1), v)
        assert (pos[1] == 2).all()  # first of the tied positions
        assert fn(a3, False)[1] is None


def test_window_max_cpu_equals_max_with_indices():
    from neuronrank.engine.kernels import _window_max_cpu

    for seed in range(3):
        a3 = torch.randn(4, 33, 17, generator=torch.Generator().manual_seed(seed)).round()  # many ties
        v, i = a3.max(dim=1)
        got_v, got_i = _window_max_cpu(a3)
        assert torch.equal(got_v, v) and torch.equal(got_i, i)


def test_compile_failure_falls_back_to_eager(tiny, tiny_windows, monkeypatch):
    """NEURONRANK_COMPILE=1 with a broken compiler: same numbers as the eager pass, no error."""
    import neuronrank.engine.kernels as st
    from neuronrank.engine import native

    def broken(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("no compiler here")
        return run

    monkeypatch.setenv(native.NATIVE_ENV, "0")
    eager = collect(tiny, batched(tiny_windows, 4), topk=3)
    monkeypatch.setenv(st.COMPILE_ENV, "1")
    monkeypatch.setattr(st.torch, "compile", broken)
    monkeypatch.setattr(st, "_COMPILED", {})
    got = collect(tiny, batched(tiny_windows, 4), topk=3)
    np.testing.assert_array_equal(got.n_active, eager.n_active)
    np.testing.assert_allclose(got.sum_abs, eager.sum_abs, rtol=1e-12)
    np.testing.assert_array_equal(got.top_pos, eager.top_pos)


def test_compile_auto_policy(monkeypatch):
    import neuronrank.engine.kernels as st

    from neuronrank.engine import native

    monkeypatch.setattr(st, "_COMPILED", {})
    monkeypatch.delenv(st.COMPILE_ENV, raising=False)
    monkeypatch.setenv(native.NATIVE_ENV, "0")
    assert st.fused_kernels(torch.device("cpu"), 10**6) is None  # small runs never pay for a compile
    monkeypatch.setenv(st.COMPILE_ENV, "0")
    assert st.fused_kernels(torch.device("cpu"), 10**12) is None
    assert not st._COMPILED


@pytest.mark.slow
def test_compiled_pass_matches_eager(tiny_windows, monkeypatch):
    """The torch.compile'd kernel in a real pass (compiles: ~20 s cold on a small CPU)."""
    import neuronrank.engine.kernels as st

    model = make_tiny()
    monkeypatch.setenv("NEURONRANK_NATIVE", "0")
    eager = collect(model, batched(tiny_windows, 3), topk=3)
    monkeypatch.delenv("NEURONRANK_NATIVE")
    monkeypatch.setenv(st.COMPILE_ENV, "1")
    monkeypatch.setattr(st, "_COMPILED", {})
    got = collect(model, batched(tiny_windows, 3), topk=3)
    assert st._COMPILED.get("cpu") is not None  # it really compiled, no fallback
    np.testing.assert_array_equal(got.n_active, eager.n_active)
    for f in ("sum_abs", "sum_act", "sum_sq"):
        np.testing.assert_allclose(getattr(got, f), getattr(eager, f), rtol=1e-5, atol=1e-6)
    assert got.input_sq.keys() == eager.input_sq.keys() and "down_in" in got.input_sq  # compiled too
    for k in got.input_sq:
        np.testing.assert_allclose(got.input_sq[k], eager.input_sq[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.down_input_mean(), eager.down_input_mean(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.flap_fluctuation(), eager.flap_fluctuation(), rtol=1e-4)
    np.testing.assert_array_equal(got.top_vals, eager.top_vals)
    np.testing.assert_array_equal(got.top_pos, eager.top_pos)
    np.testing.assert_array_equal(got.top_window, eager.top_window)


def test_skip_first_drops_the_first_positions_from_every_statistic(tiny_windows):
    from neuronrank.engine.models import mlp_blocks
    from neuronrank.config.requests import StatsRequest

    model = make_tiny(layers=2)
    acts, ins = [], []
    b = mlp_blocks(model)[1]
    h1 = b.gate.register_forward_hook(lambda m, a, o: acts.append(b.act_fn(o).detach()))
    h2 = b.down.register_forward_pre_hook(lambda m, a: ins.append(a[0].detach()))
    with torch.no_grad():
        model.model(input_ids=tiny_windows)
    h1.remove(), h2.remove()
    st = collect(model, [tiny_windows], skip_first=2)
    a = acts[0][:, 2:].double()
    assert st.tokens[1] == a.shape[0] * a.shape[1]
    np.testing.assert_allclose(st.sum_abs[1], a.abs().sum((0, 1)).numpy(), rtol=1e-5)
    np.testing.assert_allclose(st.n_active[1], (a > 0).sum((0, 1)).numpy())
    np.testing.assert_allclose(st.input_sq["down_in"][1], ins[0][:, 2:].double().pow(2).sum((0, 1)).numpy(), rtol=1e-5)
    np.testing.assert_allclose(st.down_input_mean()[1], ins[0][:, 2:].double().mean((0, 1)).numpy(), rtol=1e-5,
                               atol=1e-7)
    assert (st.top_pos[st.top_pos >= 0] >= 2).all()
    with pytest.raises(UserError, match="skip_first"):
        StatsRequest(seqlen=8, skip_first=8).validate()


def test_skip_first_is_part_of_the_cache_key(tiny_dir, text_file):
    from neuronrank.engine.statistics import get_stats
    from neuronrank.config.requests import StatsRequest

    base = dict(model=str(tiny_dir), calib=f"file:{text_file}", nsamples=2, seqlen=8)
    a = get_stats(StatsRequest(**base))
    b = get_stats(StatsRequest(**base, skip_first=1))
    assert a.entry.key != b.entry.key and not b.cached
    assert b.stats.tokens[0] == 2 * 7 and a.stats.tokens[0] == 2 * 8
    assert "skip_first" not in a.entry.params and b.entry.params["skip_first"] == 1


def test_scratch_buffers_of_a_one_pass_serve_layer_by_layer_calibration_too():
    """The one-pass statistics run under inference mode, layer-by-layer calibration (sequential pruning, a
    sequential search) outside it; a scratch buffer of the same shape made by the first must not be written
    by the second (torch refuses an in-place update of an inference tensor)."""
    from neuronrank.engine.kernels import activation_sums

    a3 = torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        one_pass, _ = activation_sums(a3, False)
    with torch.no_grad():
        layer_by_layer, _ = activation_sums(a3, False)
    assert torch.equal(one_pass, layer_by_layer)
