"""The CUDA path: skipped cleanly without a GPU; on one, statistics (eager and torch.compile'd kernels,
fp32 and bf16) equal a float64 recomputation on the CPU, masks equal the CPU's, perplexity agrees.

Runs under pytest, or as a script where pytest is not installed (the GPU machine):
`python tests/unit/engine/test_cuda.py` runs every test here and exits non-zero on a failure.
"""

import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repo, for `python tests/unit/engine/test_cuda.py`

try:
    import pytest
except ImportError:  # the GPU machine: conftest (make_tiny) only needs pytest.fixture to exist
    import types

    def _fixture(*args, **kwargs):
        return args[0] if args and callable(args[0]) else (lambda fn: fn)

    sys.modules["pytest"] = types.SimpleNamespace(fixture=_fixture)
    pytest = None

from neuronrank.evaluation.perplexity import perplexity  # noqa: E402
from neuronrank.engine.collect import batched, collect  # noqa: E402
from tests.conftest import make_tiny  # noqa: E402

HAS_CUDA = torch.cuda.is_available()


def needs_cuda(fn):
    fn.needs_cuda = True  # for the script runner
    if pytest is not None:
        return pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")(fn)
    return fn


def _windows():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 96, (6, 16), generator=g)


def _reference(model, batches):
    """Float64 sums on the CPU from the activations and inputs the model itself produced (captured
    with hooks, outside our code path), batch by batch as collect runs them."""
    layers = model.model.layers
    keep = {}
    hooks = []
    for i, layer in enumerate(layers):
        mlp = layer.mlp
        hooks.append(mlp.act_fn.register_forward_hook(
            lambda m, a, o, i=i: keep.setdefault(("a", i), []).append(o.detach().double().cpu())))
        hooks.append(mlp.gate_proj.register_forward_pre_hook(
            lambda m, a, i=i: keep.setdefault(("x", i), []).append(a[0].detach().double().cpu())))
        hooks.append(mlp.down_proj.register_forward_pre_hook(
            lambda m, a, i=i: keep.setdefault(("p", i), []).append(a[0].detach().double().cpu())))
    try:
        with torch.inference_mode():
            for b in batches:
                model.model(input_ids=b.to(model.device), use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    out = []
    for i in range(len(layers)):
        a = torch.cat([t.reshape(-1, t.shape[-1]) for t in keep[("a", i)]])
        x = torch.cat([t.reshape(-1, t.shape[-1]) for t in keep[("x", i)]])
        p = torch.cat([t.reshape(-1, t.shape[-1]) for t in keep[("p", i)]])
        out.append(dict(sum_act=a.sum(0).numpy(), sum_abs=a.abs().sum(0).numpy(), sum_sq=(a * a).sum(0).numpy(),
                        n_active=(a > 0).sum(0).numpy(), mlp_in=(x * x).sum(0).numpy(),
                        down_in=(p * p).sum(0).numpy(), a=a, p=p))
    return out


def _check_against_reference(dtype, compiled: bool):
    import neuronrank.engine.kernels as st

    old = os.environ.get(st.COMPILE_ENV)
    os.environ[st.COMPILE_ENV] = "1" if compiled else "0"
    st._COMPILED.clear()
    try:
        model = make_tiny().to("cuda", dtype)
        batches = batched(_windows(), 3)
        got = collect(model, batches, topk=3)
        if compiled:
            assert st._COMPILED.get("cuda") is not None, "torch.compile failed and fell back to eager"
        ref = _reference(model, batches)
    finally:
        st._COMPILED.clear()
        if old is None:
            os.environ.pop(st.COMPILE_ENV, None)
        else:
            os.environ[st.COMPILE_ENV] = old
    for i, r in enumerate(ref):
        # the same activations summed in float32 partials vs float64: accumulation error only
        for f in ("sum_act", "sum_abs", "sum_sq"):
            np.testing.assert_allclose(getattr(got, f)[i], r[f], rtol=2e-5, atol=5e-5, err_msg=f"{f} layer {i}")
        np.testing.assert_array_equal(got.n_active[i], r["n_active"])
        np.testing.assert_allclose(got.input_sq["mlp_in"][i], r["mlp_in"], rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(got.input_sq["down_in"][i], r["down_in"], rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(got.input_sum["down_in"][i], r["p"].sum(0).numpy(), rtol=2e-5, atol=1e-5)
        a = r["a"].reshape(6, 16, -1).numpy()
        expect = -np.sort(-a.max(axis=1), axis=0)[:3].T
        np.testing.assert_allclose(got.top_vals[i], expect, rtol=0, atol=0)
        at = a[got.top_window[i], got.top_pos[i], np.arange(got.width)[:, None]]
        np.testing.assert_array_equal(at, got.top_vals[i])


@needs_cuda
def test_stats_eager_fp32_cuda_equal_float64():
    _check_against_reference(torch.float32, compiled=False)


@needs_cuda
def test_stats_eager_bf16_cuda_equal_float64():
    _check_against_reference(torch.bfloat16, compiled=False)


@needs_cuda
def test_stats_compiled_fp32_cuda_equal_float64():
    _check_against_reference(torch.float32, compiled=True)


@needs_cuda
def test_stats_compiled_bf16_cuda_equal_float64():
    _check_against_reference(torch.bfloat16, compiled=True)


@needs_cuda
def test_stats_on_cuda_match_cpu():
    w = _windows()
    ref = collect(make_tiny(), batched(w, 3))
    got = collect(make_tiny().to("cuda"), batched(w, 3))
    np.testing.assert_allclose(got.tf, ref.tf, rtol=1e-4)
    np.testing.assert_array_equal(got.tokens, ref.tokens)
    low = collect(make_tiny().to("cuda", torch.bfloat16), batched(w, 3))
    np.testing.assert_allclose(low.tf, ref.tf, rtol=0.1, atol=1e-2)  # bf16 activations: ~3 digits


@needs_cuda
def test_threshold_masks_on_cuda_equal_cpu():
    """The sort-based threshold on CUDA picks exactly the CPU's entries, ties included."""
    from neuronrank.prune.masks import lowest_mask

    g = torch.Generator().manual_seed(0)
    for metric in (torch.rand(300, 257, generator=g), torch.randint(0, 5, (300, 257), generator=g).float(),
                   (torch.randn(128, 256, generator=g) * 0.02).bfloat16().abs()):
        for ratio in (0.1, 0.5, 0.77):
            cpu = lowest_mask(metric, ratio)
            gpu = lowest_mask(metric.cuda(), ratio).cpu()
            assert torch.equal(cpu, gpu), (metric.dtype, ratio)
            assert int(gpu.sum()) == round(ratio * metric.numel())
            # RIA's / OWL's `<=` rule: the same threshold value on both devices
            assert torch.equal(lowest_mask(metric, ratio, rule="upstream"),
                               lowest_mask(metric.cuda(), ratio, rule="upstream").cpu())


@needs_cuda
def test_perplexity_on_cuda_matches_cpu():
    w = _windows()
    ref = perplexity(make_tiny(), w).ppl
    got = perplexity(make_tiny().to("cuda"), w).ppl
    assert abs(got - ref) <= 1e-4 * ref, (got, ref)


def test_gpu_bench_smoke():
    """The GPU benchmark script itself runs (tiny shape, on the CPU here)."""
    import subprocess

    root = Path(__file__).resolve().parents[3]
    r = subprocess.run([sys.executable, str(root / "bench/gpu_llama7b.py"), "--shape", "tiny", "--seqlen", "64",
                        "--batches", "2", "--reps", "1", "--device", "cpu", "--prune", "--calib", "4"],
                       capture_output=True, text=True, timeout=300, cwd=root)
    assert r.returncode == 0, r.stderr
    assert "RESULT gpu_stats_overhead_ratio" in r.stdout
    assert "RESULT gpu_neuronrank_old_prune_step_s" in r.stdout


def _run_as_script() -> int:
    """Without pytest: run each test, print one line per test, exit 1 if any failed."""
    import time
    import traceback

    failed = 0
    tests = [(n, f) for n, f in sorted(globals().items(), key=lambda kv: kv[0]) if n.startswith("test_")]
    for name, fn in tests:
        if getattr(fn, "needs_cuda", False) and not HAS_CUDA:
            print(f"SKIP {name} (needs a CUDA device)", flush=True)
            continue
        t = time.perf_counter()
        try:
            fn()
            print(f"PASS {name} ({time.perf_counter() - t:.1f} s)", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {name} ({time.perf_counter() - t:.1f} s)", flush=True)
            traceback.print_exc()
    print(f"{len(tests) - failed} passed/skipped, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(_run_as_script())
