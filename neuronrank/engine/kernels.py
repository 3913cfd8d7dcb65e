"""The per-batch reductions of the statistics pass: the whole cost of statistics beyond the forward.

    activation_sums(a3, want_top)   Σa, Σ|a|, Σa², n_active of a [windows, seqlen, neurons] activation and
                                    each window's maximum with its position (eager kernels, per device)
    sq_sum_rows(x)                  Σ over rows of x² (Wanda's ‖X_k‖²)
    window_sums(x3)                 per window Σx and Σx² of a [windows, seqlen, features] input (the
                                    down_proj input's moments: its mean, FLAP's fluctuation)
    fused_kernels(device, n)        the same as one-read kernels: native (native.py) on a CPU, else
                                    torch.compile'd where that pays off

Reusable scratch buffers keep the hooks from allocating anything the size of an activation.
"""

from __future__ import annotations

import logging
import os

import torch

from neuronrank.engine import native

log = logging.getLogger(__name__)


def activation_sums(a3: torch.Tensor, want_top: bool = True):
    """[windows, seqlen, neurons] activation -> ([4, neurons] Σa, Σ|a|, Σa², n_active for this batch,
    (per-window max [windows, neurons], its position) or None).

    Eager kernels, chosen per device for the fewest full passes: on a GPU every reduction is one read
    (norms with float32 accumulation), the count a > 0 one compare; on a CPU the norm kernels along the
    token axis are slow, so it uses relu/sign into one scratch buffer and fast column sums, with
    Σ|a| = 2·Σrelu(a) − Σa. Counts are sums of exact 0/1 values (exact in float32 below 2^24 tokens
    per batch, float64 beyond), and a == 0 is not active.
    """
    a = a3.reshape(-1, a3.shape[-1])
    acc = torch.float64 if a.dtype == torch.float64 or a.shape[0] >= 1 << 24 else torch.float32
    if a.is_cuda:
        s_act = a.sum(0, dtype=acc)
        s_abs = torch.linalg.vector_norm(a, 1, dim=0, dtype=acc)
        s_sq = torch.linalg.vector_norm(a, 2, dim=0, dtype=acc).square_()
        n_act = torch.gt(a, 0).sum(0, dtype=acc)
        sums = torch.stack([s_act, s_abs, s_sq, n_act])
    else:
        if a.dtype not in (torch.float32, torch.float64):  # bf16 squares would round to 8 bits
            a = _scratch(a, torch.float32, tag="upcast").copy_(a)
        buf = _scratch(a)
        s_act = a.sum(0, dtype=acc)
        s_pos = torch.clamp(a, min=0, out=buf).sum(0, dtype=acc)
        n_act = buf.sign_().sum(0, dtype=acc)  # relu(a) > 0 exactly where a > 0
        s_sq = torch.mul(a, a, out=buf).sum(0, dtype=acc)
        sums = torch.stack([s_act, s_pos.mul_(2).sub_(s_act), s_sq, n_act])
    # One top-k entry per calibration window (its maximum and where): k distinct contexts per
    # neuron, which is what a reader wants to see, at a quarter of the cost of a token-level topk.
    if not want_top:
        return sums, None
    if a.is_cuda:
        return sums, tuple(a3.max(dim=1))
    return sums, _window_max_cpu(a3)


def _window_max_cpu(a3: torch.Tensor):
    """a3.max(dim=1) (values, first position of the maximum) without the CPU's scalar max-with-indices
    kernel over a middle axis (~6x a plain pass): one vectorised amax over blocks of 16 positions,
    then the first block holding the window maximum, then the first position inside that block,
    both found on 1/16 of the data."""
    W, S, n = a3.shape
    B = 16
    if S % B or S < 4 * B:
        return a3.amax(1), _first_equal(a3, a3.amax(1))
    blocks = a3.reshape(W, S // B, B, n)
    bmax = blocks.amax(2)  # [W, S/B, n]: the one full read
    m = bmax.amax(1)  # [W, n]
    bi = _first_equal(bmax, m)  # first block holding the maximum
    rows = torch.gather(blocks, 1, bi.view(W, 1, 1, n).expand(W, 1, B, n)).squeeze(1)  # [W, B, n]
    return m, bi.mul_(B).add_(_first_equal(rows, m))


def _first_equal(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """[W, L, n], [W, n] -> int64 [W, n]: the first l with x[w, l, i] == m[w, i] (vectorised argmax)."""
    L = x.shape[1]
    buf = torch.ne(x, m.unsqueeze(1)).to(torch.float32)  # 0 where equal, 1 elsewhere
    buf.mul_(L).add_(torch.arange(L, dtype=torch.float32).view(1, L, 1))  # l where equal, l + L elsewhere
    return buf.amin(1).clamp_(max=L - 1).to(torch.int64)  # (NaN: nothing equal; stay in range)


def _fused_sums(a3: torch.Tensor, want_top: bool):
    """The same as activation_sums as one kernel for torch.compile: a single read of the activation
    gives per-window partial sums (float32), the window max and its position.

    The position is the smallest index where the activation equals the window max: a min-reduction
    that inductor vectorises on a CPU; with `max(dim=1)` and its indices (a scalar loop there) the
    kernel took 2.6 ms on [8, 256, 1536] float32 with 2 threads, this way 0.8 ms."""
    acc = torch.float64 if a3.dtype == torch.float64 else torch.float32
    a = a3.to(acc)
    part = torch.stack([a.sum(1), a.abs().sum(1), (a * a).sum(1), (a > 0).to(acc).sum(1)])  # [4, W, n]
    sums = part.sum(1)
    if not want_top:
        return sums, None
    S = a3.shape[1]
    m = a3.amax(1)
    at = torch.arange(S, device=a3.device, dtype=torch.int32).view(1, S, 1)
    pos = torch.where(a3 == m.unsqueeze(1), at, S).amin(1).clamp(max=S - 1)  # (NaN: nothing equal)
    return sums, (m, pos.to(torch.int64))


def _fused_sq(x: torch.Tensor) -> torch.Tensor:
    """sq_sum_rows as one kernel for torch.compile: one read, no squared copy."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.to(acc)
    return (x * x).sum(0).to(torch.float64)


def sq_sum_rows(x: torch.Tensor) -> torch.Tensor:
    """Σ over rows of x² (Wanda's ‖X_k‖²), float64 [features]."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    if x.is_cuda:  # one read, float32 accumulation, no rounded bf16 squares
        return torch.linalg.vector_norm(x, 2, dim=0, dtype=acc).square_().to(torch.float64)
    if x.dtype not in (torch.float32, torch.float64):
        x = _scratch(x, torch.float32, tag="upcast").copy_(x)
    return torch.mul(x, x, out=_scratch(x)).sum(0, dtype=acc).to(torch.float64)


def window_sums(x3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[windows, seqlen, features] -> (Σ_t x, Σ_t x²), float64 [windows, features] each: the sums within each
    window (float32 accumulation over its tokens, as sq_sum_rows), so that order-dependent statistics
    (FLAP's running fluctuation) can be built from them and totals are their sums."""
    acc = torch.float64 if x3.dtype == torch.float64 else torch.float32
    if x3.is_cuda:
        s1 = x3.sum(1, dtype=acc)
        s2 = torch.linalg.vector_norm(x3, 2, dim=1, dtype=acc).square_()
    else:
        if x3.dtype not in (torch.float32, torch.float64):
            x3 = _scratch(x3, torch.float32, tag="upcast").copy_(x3)
        s1 = x3.sum(1, dtype=acc)
        s2 = torch.mul(x3, x3, out=_scratch(x3)).sum(1, dtype=acc)
    return s1.to(torch.float64), s2.to(torch.float64)


def _fused_window_sums(x3: torch.Tensor):
    """window_sums as one kernel for torch.compile: one read of the input."""
    acc = torch.float64 if x3.dtype == torch.float64 else torch.float32
    x = x3.to(acc)
    return x.sum(1).to(torch.float64), (x * x).sum(1).to(torch.float64)


_COMPILED: dict = {}
COMPILE_ENV = "NEURONRANK_COMPILE"  # 1: always, 0: never, auto (default): when it pays off


def fused_kernels(device: torch.device, elements: int):
    """One-read kernels for this pass, or None for the eager kernels above.

    On a CPU: the native kernels (native.py: built once per machine, a single read of each activation,
    no compile cost per process) at every run size, unless NEURONRANK_NATIVE=0 or no compiler could build
    them. torch.compile'd kernels read once too, but compiling costs ~1-4 s per process (warm on-disk
    cache) to ~20 s (cold) on this 2-core machine; `NEURONRANK_COMPILE=1` forces them, and without the
    native kernels `auto` compiles on a CPU for runs of >= 5e9 activation values (the embedded model:
    ~110k tokens, minutes of forward). On a GPU the eager kernels are already memory-bound single reads.
    Any compile failure falls back to the eager kernels."""
    mode = os.environ.get(COMPILE_ENV, "auto").strip().lower()
    if mode not in ("1", "on", "true", "yes") and device.type == "cpu":
        lib = native.library()
        if lib is not None:
            return NativeKernels(lib)
    if mode in ("0", "off", "false", "no"):
        return None
    if mode == "auto" and not (device.type == "cpu" and elements >= 5e9):
        return None
    if not hasattr(torch, "compile"):
        return None
    key = device.type
    if key not in _COMPILED:
        _COMPILED[key] = (torch.compile(_fused_sums, dynamic=False), torch.compile(_fused_sq, dynamic=False),
                          torch.compile(_fused_window_sums, dynamic=False))
    return _Compiled(key)


class _Compiled:
    """The compiled kernels of one device type; any compile failure switches them all to eager."""

    def __init__(self, key: str):
        self.key = key

    def _call(self, i: int, eager, *args):
        kernels = _COMPILED.get(self.key)
        if kernels is None:
            return eager(*args)
        try:
            return kernels[i](*args)
        except torch.OutOfMemoryError:
            raise
        except Exception as e:  # no compiler, unsupported backend...: the eager kernels
            log.warning("torch.compile of the statistics kernel failed (%s); using eager kernels",
                        str(e).splitlines()[0] if str(e) else type(e).__name__)
            _COMPILED[self.key] = None
            return eager(*args)

    def __call__(self, a3: torch.Tensor, want_top: bool):
        return self._call(0, activation_sums, a3, want_top)

    def sq(self, x: torch.Tensor) -> torch.Tensor:
        return self._call(1, sq_sum_rows, x)

    def window_sums(self, x3: torch.Tensor):
        return self._call(2, window_sums, x3)


class NativeKernels:
    """The native one-read kernels (native.py) where a tensor is one they read (float32, CPU, contiguous),
    the eager kernels for anything else; also the weight norms of `finish`."""

    def __init__(self, lib):
        self.lib = lib

    def __call__(self, a3: torch.Tensor, want_top: bool):
        if native.usable(a3):
            return native.act_stats(self.lib, a3, want_top)
        return activation_sums(a3, want_top)

    def sq(self, x: torch.Tensor) -> torch.Tensor:
        return native.col_sq(self.lib, x) if x.dim() == 2 and native.usable(x) else sq_sum_rows(x)

    def window_sums(self, x3: torch.Tensor):
        return native.window_sums(self.lib, x3) if native.usable(x3) else window_sums(x3)

    def weight_sq(self, w: torch.Tensor, dim: int):
        """Σ w² along `dim` (1: per row, 0: per column) of a 2-D weight, float64; None where not readable."""
        if w.dim() != 2 or not native.usable(w):
            return None
        return native.row_sq(self.lib, w) if dim == 1 else native.col_abs_sq(self.lib, w)[1]

    def down_moments(self, dm, s1: torch.Tensor, s2: torch.Tensor, first: int, T: int) -> bool:
        """hooks.DownMoments.add's update in one native call; False (nothing done) where it does not apply."""
        ts = (s1, s2, dm.c, dm.a, dm.b, dm.d)
        if not all(t.dtype == torch.float64 and t.device.type == "cpu" and t.is_contiguous() for t in ts):
            return False
        native.down_moments(self.lib, s1, s2, first, T, dm.c, dm.a, dm.b, dm.d)
        return True

    def weight_abs_sq_cols(self, w: torch.Tensor):
        """(Σ|w|, Σw²) per column of a 2-D weight in one read, float64; None where not readable."""
        if w.dim() != 2 or not native.usable(w):
            return None
        return native.col_abs_sq(self.lib, w)


_SCRATCH: dict = {}


def _scratch(like: torch.Tensor, dtype: torch.dtype | None = None, tag: str = "") -> torch.Tensor:
    """One reusable buffer per shape/dtype/device: layers run one after another, so they can share
    it, and the hooks allocate nothing the size of an activation. A buffer made under inference mode (the
    one-pass statistics) cannot be written outside it (layer-by-layer calibration): the mode is in the key."""
    dtype = dtype or like.dtype
    key = (tuple(like.shape), dtype, like.device, tag, torch.is_inference_mode_enabled())
    buf = _SCRATCH.get(key)
    if buf is None:
        if len(_SCRATCH) >= 8:  # a few live shapes at most (the last batch may be smaller)
            _SCRATCH.clear()
        buf = _SCRATCH[key] = torch.empty(like.shape, dtype=dtype, device=like.device)
    return buf
