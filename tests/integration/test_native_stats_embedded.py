"""The statistics pass on the embedded SmolLM2-135M (slow: the real model) with the default kernels — the
native ones where they build — against a float64 recomputation from the activations captured by plain
hooks, at the real widths (1536 neurons, 576 features: several threads' shares and inner chunks)."""

import numpy as np
import pytest
import torch

from neuronrank.engine import kernels, models
from neuronrank.engine.collect import batched, collect


@pytest.mark.slow
def test_embedded_statistics_match_float64_recomputation():
    model, tok = models.load("smollm2-135m", "cpu", "fp32")
    g = torch.Generator().manual_seed(0)
    windows = torch.randint(0, 49152, (3, 48), generator=g)
    blocks = models.mlp_blocks(model)
    kind = type(kernels.fused_kernels(torch.device("cpu"), windows.numel())).__name__
    stats = collect(model, batched(windows, 2), topk=2)  # two batches: the merge across batches too

    layers = (0, len(blocks) - 1)
    seen = {i: {"act": [], "x": [], "down": []} for i in layers}
    hs = []
    for i in layers:
        b = blocks[i]
        hs.append(b.gate.register_forward_hook(lambda m, a, o, i=i: seen[i]["act"].append(blocks[i].act_fn(o))))
        hs.append(b.gate.register_forward_pre_hook(lambda m, a, i=i: seen[i]["x"].append(a[0])))
        hs.append(b.down.register_forward_pre_hook(lambda m, a, i=i: seen[i]["down"].append(a[0])))
    with torch.inference_mode():
        models.decoder_body(model)(input_ids=windows, use_cache=False)
    for h in hs:
        h.remove()
    for i in layers:
        a = seen[i]["act"][0].double()  # [3, 48, 1536]
        flat = a.reshape(-1, a.shape[-1])
        assert stats.tokens[i] == flat.shape[0]
        np.testing.assert_array_equal(stats.n_active[i], (flat > 0).sum(0).numpy(), err_msg=kind)
        np.testing.assert_allclose(stats.tf[i], flat.abs().mean(0).numpy(), rtol=1e-6, atol=1e-9, err_msg=kind)
        np.testing.assert_allclose(stats.sum_sq[i], (flat * flat).sum(0).numpy(), rtol=1e-6, err_msg=kind)
        np.testing.assert_allclose(stats.mean[i], flat.mean(0).numpy(), rtol=1e-5, atol=1e-7, err_msg=kind)
        expect = -np.sort(-a.amax(1).numpy(), axis=0)[:2].T  # the two largest window maxima per neuron
        np.testing.assert_allclose(stats.top_vals[i], expect, rtol=1e-6, err_msg=kind)
        n = np.arange(a.shape[-1])[:, None]
        np.testing.assert_allclose(a.numpy()[stats.top_window[i], stats.top_pos[i], n], stats.top_vals[i], rtol=1e-6)
        x = seen[i]["x"][0].double().reshape(-1, 576)
        np.testing.assert_allclose(stats.input_sq["mlp_in"][i], (x * x).sum(0).numpy(), rtol=1e-6, err_msg=kind)
        d = seen[i]["down"][0].double().reshape(-1, a.shape[-1])
        np.testing.assert_allclose(stats.input_sq["down_in"][i], (d * d).sum(0).numpy(), rtol=1e-6, err_msg=kind)
        w = blocks[i].gate.weight.detach().double()
        np.testing.assert_allclose(stats.w_norm[i], w.norm(dim=1).numpy(), rtol=1e-6, err_msg=kind)
        wd = blocks[i].down.weight.detach().double()
        np.testing.assert_allclose(stats.down_norm[i], wd.norm(dim=0).numpy(), rtol=1e-6, err_msg=kind)
        np.testing.assert_allclose(stats.down_abs_mean[i], wd.abs().mean(0).numpy(), rtol=1e-6, err_msg=kind)
