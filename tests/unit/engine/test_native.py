"""The native statistics kernels (engine/native.py, stats_kernels.cpp) against float64 by hand and against the
eager kernels, on tiny and odd shapes; their fallback when they cannot be built or loaded."""

import logging

import numpy as np
import pytest
import torch

from neuronrank.engine import kernels, native
from neuronrank.engine.collect import batched, collect
from neuronrank.engine.hooks import DownMoments
from tests.conftest import make_tiny

needs_compiler = pytest.mark.skipif(native._compiler() is None, reason="no C++ compiler on this machine")

# shapes that cross the kernel's edges: one element, fewer columns than a cache line, odd sizes, more rows
# than one float32 block (64), more columns than one inner chunk (256) and than a thread's share
SHAPES = [(1, 1, 1), (3, 7, 11), (2, 65, 17), (1, 130, 300), (4, 16, 48)]


@pytest.fixture(scope="module")
def lib():
    if native._compiler() is None:
        pytest.skip("no C++ compiler on this machine")
    lib = native.library()
    assert lib is not None, "a compiler is present, so the native kernels must build"
    return lib


def _awkward(W, S, n, seed=0):
    """Exact zeros, negative zeros, ties of the window maximum, a never-active neuron."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(W, S, n, generator=g) * 3
    a[:, ::3, :] = 0.0
    if S > 1:
        a[0, 1, :] = -0.0
    if S > 5:
        a[:, 2, :] = a[:, 5, :] = 40.0  # the window max at two positions: the first one is reported
    a[:, :, 0] = -1.0
    return a


def _close(got, ref, scale):
    """float32 accumulation against float64: within 1e-6 of the column's Σ|x| (a signed sum may cancel)."""
    assert ((got - ref).abs() <= 1e-6 * scale + 1e-9).all(), float(((got - ref).abs() / scale.clamp(min=1e-30)).max())


def _by_hand(a3):
    a = a3.double().reshape(-1, a3.shape[-1])
    return torch.stack([a.sum(0), a.abs().sum(0), (a * a).sum(0), (a > 0).sum(0).double()])


@pytest.mark.parametrize("shape", SHAPES)
def test_activation_stats_match_float64_and_eager(lib, shape):
    a3 = _awkward(*shape)
    sums, (vals, pos) = native.act_stats(lib, a3, True)
    assert sums.dtype == torch.float64 and vals.dtype == torch.float32 and pos.dtype == torch.int64
    ref = _by_hand(a3)
    for i in range(3):
        _close(sums[i], ref[i], ref[1] if i == 0 else ref[i])
    assert torch.equal(sums[3], ref[3])  # counts exact; 0 and -0.0 are not active
    v, i = a3.max(dim=1)
    assert torch.equal(vals, v) and torch.equal(pos, i)  # torch's own first position of the maximum
    e_sums, (e_vals, e_pos) = kernels.activation_sums(a3, True)
    assert torch.equal(sums[3], e_sums[3].double()) and torch.equal(vals, e_vals) and torch.equal(pos, e_pos)
    for i in range(3):
        _close(sums[i], e_sums[i].double(), ref[1] if i == 0 else ref[i])
    no_top, none = native.act_stats(lib, a3, False)
    assert none is None and torch.equal(no_top, sums)


@pytest.mark.parametrize("shape", SHAPES)
def test_input_sums_match_float64(lib, shape):
    x3 = _awkward(*shape, seed=1)
    s1, s2 = native.window_sums(lib, x3)
    x = x3.double()
    _close(s1, x.sum(1), x.abs().sum(1))
    torch.testing.assert_close(s2, (x * x).sum(1), rtol=1e-6, atol=1e-6)
    flat = x3.reshape(-1, x3.shape[-1])
    torch.testing.assert_close(native.col_sq(lib, flat), (x * x).sum((0, 1)), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(native.col_sq(lib, flat), kernels.sq_sum_rows(flat), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("rows, cols", [(1, 1), (5, 3), (130, 17), (48, 32), (65, 300)])
def test_weight_norms_match_float64(lib, rows, cols):
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(rows))
    wd = w.double()
    torch.testing.assert_close(native.row_sq(lib, w), (wd * wd).sum(1), rtol=1e-6, atol=0)
    sabs, ssq = native.col_abs_sq(lib, w)
    torch.testing.assert_close(sabs, wd.abs().sum(0), rtol=1e-6, atol=0)
    torch.testing.assert_close(ssq, (wd * wd).sum(0), rtol=1e-6, atol=0)


def test_results_do_not_depend_on_the_thread_count(lib):
    a3 = _awkward(3, 70, 300, seed=2)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native.act_stats(lib, a3, True), native.window_sums(lib, a3)
        torch.set_num_threads(2)
        two = native.act_stats(lib, a3, True), native.window_sums(lib, a3)
    finally:
        torch.set_num_threads(old)
    (s, (v, p)), (w1, w2) = one
    (s_, (v_, p_)), (w1_, w2_) = two
    for x, y in ((s, s_), (v, v_), (p, p_), (w1, w1_), (w2, w2_)):
        assert torch.equal(x, y)


def test_down_moments_match_the_python_update(lib):
    """FLAP's fluctuation terms over several batches: the native update against DownMoments' tensor code."""
    g = torch.Generator().manual_seed(3)
    ref, got = DownMoments(13, "cpu"), DownMoments(13, "cpu")
    nk = kernels.NativeKernels(lib)
    first = 0
    for W in (3, 1, 4):
        s1 = torch.randn(W, 13, generator=g, dtype=torch.float64)
        s2 = s1 * s1 + torch.rand(W, 13, generator=g, dtype=torch.float64)
        ref.add(s1, s2, first, 16)
        got.add(s1, s2, first, 16, nk)
        first += W
    for f in ("c", "a", "b", "d"):
        torch.testing.assert_close(getattr(got, f), getattr(ref, f), rtol=1e-12, atol=1e-12)
    assert got.windows == ref.windows == 8


def test_tensors_it_cannot_read_go_to_the_eager_kernels(lib):
    nk = kernels.NativeKernels(lib)
    a3 = _awkward(2, 9, 10)
    for t in (a3.to(torch.bfloat16), a3.double(), a3.transpose(1, 2).contiguous().transpose(1, 2)):
        assert not native.usable(t)
        sums, (vals, pos) = nk(t, True)
        e_sums, (e_vals, e_pos) = kernels.activation_sums(t, True)
        assert torch.equal(sums, e_sums) and torch.equal(vals, e_vals) and torch.equal(pos, e_pos)
    assert nk.weight_sq(a3[0].double(), 1) is None and nk.weight_abs_sq_cols(a3[0].t()) is None


def test_a_pass_with_native_kernels_matches_the_eager_pass(lib, tiny_windows, monkeypatch):
    model = make_tiny()
    monkeypatch.setenv(native.NATIVE_ENV, "0")
    eager = collect(model, batched(tiny_windows, 4), topk=3)
    monkeypatch.delenv(native.NATIVE_ENV)
    assert isinstance(kernels.fused_kernels(torch.device("cpu"), 10**6), kernels.NativeKernels)
    got = collect(model, batched(tiny_windows, 4), topk=3)
    np.testing.assert_array_equal(got.n_active, eager.n_active)
    np.testing.assert_array_equal(got.top_vals, eager.top_vals)
    np.testing.assert_array_equal(got.top_pos, eager.top_pos)
    np.testing.assert_array_equal(got.top_window, eager.top_window)
    for f in ("sum_abs", "sum_act", "sum_sq", "w_norm", "up_norm", "down_norm", "down_abs_mean"):
        np.testing.assert_allclose(getattr(got, f), getattr(eager, f), rtol=1e-6, atol=1e-7)
    for k in eager.input_sq:
        np.testing.assert_allclose(got.input_sq[k], eager.input_sq[k], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got.down_input_mean(), eager.down_input_mean(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got.flap_fluctuation(), eager.flap_fluctuation(), rtol=1e-5, atol=1e-9)


def _fresh(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_LIB", {})
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "kernels"))
    monkeypatch.delenv(native.NATIVE_ENV, raising=False)


def test_no_compiler_falls_back_to_eager_with_one_log_line(tiny, tiny_windows, monkeypatch, tmp_path, caplog):
    _fresh(monkeypatch, tmp_path)
    monkeypatch.setattr(native, "_compiler", lambda: None)
    with caplog.at_level(logging.WARNING, logger="neuronrank.engine.native"):
        assert kernels.fused_kernels(torch.device("cpu"), 10**6) is None
        got = collect(tiny, batched(tiny_windows, 4), topk=3)
    lines = [r for r in caplog.records if r.name == "neuronrank.engine.native"]
    assert len(lines) == 1 and "using the eager kernels" in lines[0].getMessage()
    monkeypatch.setenv(native.NATIVE_ENV, "0")
    eager = collect(tiny, batched(tiny_windows, 4), topk=3)
    np.testing.assert_array_equal(got.sum_abs, eager.sum_abs)  # the very same eager kernels
    np.testing.assert_array_equal(got.top_pos, eager.top_pos)


def test_a_broken_build_falls_back(monkeypatch, tmp_path, caplog):
    _fresh(monkeypatch, tmp_path)
    broken = tmp_path / "broken.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(native, "SOURCE", broken)
    with caplog.at_level(logging.WARNING, logger="neuronrank.engine.native"):
        assert native.library() is None
    assert "using the eager kernels" in caplog.text
    assert not list((tmp_path / "kernels").glob("*.so"))  # nothing half-written left to load


@needs_compiler
def test_a_damaged_cached_library_is_set_aside_and_rebuilt(monkeypatch, tmp_path, caplog):
    _fresh(monkeypatch, tmp_path)
    path = native.build()
    path.write_bytes(b"\x7fELF damaged")
    with caplog.at_level(logging.WARNING, logger="neuronrank.engine.native"):
        lib = native.library()
    assert lib is not None and lib.nr_abi_version() == native.ABI
    assert path.with_suffix(".damaged").exists() and "set aside" in caplog.text


@needs_compiler
def test_the_build_is_once_per_machine(monkeypatch, tmp_path):
    """A second process (a fresh _LIB) loads the cached file: no compiler run."""
    _fresh(monkeypatch, tmp_path)
    path = native.build()
    calls = []
    real_run = native.subprocess.run
    monkeypatch.setattr(native.subprocess, "run",
                        lambda cmd, **kw: calls.append(cmd) or real_run(cmd, **kw))
    assert native.library() is not None
    assert all("--version" in c for c in calls)  # only the compiler's identity, no build
    assert native._target(native._compiler()) == path
