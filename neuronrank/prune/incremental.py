"""NeuronRank-OLD masks for many exponent settings of the same weights: what a search trial needs, in a
fraction of the time of ranking every matrix from scratch.

NeuronRank-OLD's metric is |W_jk| × score_i: inside a matrix, each neuron's line of weights (a row of
gate/up, a column of down) is |W| scaled by one positive number. A positive scale keeps the order of a
line's values (float multiplication is monotone), so the sorted lines of |W| are computed once per worker
and a trial only scales them:

    unstructured  P = sorted lines × s (still sorted), the k-th smallest metric value t found by counting
                  (searchsorted per line) on t's bit pattern; pruned = rank in its line < #{P_line < t},
                  plus the first (k − #below) entries equal to t in row-major order — the tie rule of
                  masks.lowest_k_flat, so the masks are the same booleans.
    2:4, gate/up  a block's four values share the row's scale: their comparison pattern (hence topk's
                  choice) does not change unless the scale merges two distinct values by rounding
                  (values closer than 2^-22 relative, underflow, overflow, a zero scale); the mask of |W|
                  is reused and only such rows are ranked again with masks.lowest_mask.
    2:4, down     the scale differs inside a block: a 4-input sorting network on contiguous planes gives
                  the 2nd and 3rd smallest; where they differ the two smallest are forced, where they tie
                  masks.lowest_mask's topk ranks those blocks (each block on its own, as it does).

Anything else (another method or type, row groups, sequential calibration, non-finite scores, weights off
the CPU, float64, too much memory) takes the ordinary path (one_pass.py). Masks are valid for the weights
the structure was built from: the search worker restores the dense weights before every trial.
Memory: 6 bytes per weight (unstructured: sorted |W| float32 + int16 ranks), 5 for 2:4.
"""

from __future__ import annotations

import logging

import torch

from neuronrank.prune.masks import lowest_mask

log = logging.getLogger(__name__)

BUDGET_BYTES = 4 << 30  # beyond this the structure is not built (a 7B model's would be ~26 GB)
F32_MIN_NORMAL = 2.0 ** -126
F32_MAX = float(torch.finfo(torch.float32).max)
CLOSE = 2.0 ** -22  # two |W| of one block this close (relative) could round to one value when scaled
TYPES = ("unstructured", "2:4")


def applies(req, model_device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `req`'s masks can come from the scaled structure (one ratio for every layer: not OWL's)."""
    m = req.method
    return (m.neuron_scaled and not req.sequential and not req.owl and req.targets == "mlp" and req.sparsity_type in TYPES
            and (req.sparsity_type != "unstructured" or req.comparison_group == "matrix")
            and model_device.type == "cpu" and dtype in (torch.float32, torch.bfloat16, torch.float16))


class _Unstructured:
    def __init__(self, w: torch.Tensor, axis: int):
        a = w.detach().float().abs()
        lines = a if axis == 0 else a.t()
        self.axis, self.shape = axis, tuple(w.shape)
        self.V, order = torch.sort(lines.contiguous(), dim=1, stable=True)  # [lines, m]
        L, m = self.V.shape
        rdt = torch.int16 if m < 2 ** 15 else torch.int32
        rank = torch.empty((L, m), dtype=rdt)
        rank.scatter_(1, order, torch.arange(m, dtype=rdt).expand(L, m))
        self.rank = rank if axis == 0 else rank.t().contiguous()  # each weight's rank in its line, W's layout
        self.q = torch.empty((L, 1), dtype=torch.float32)

    def _kth(self, P: torch.Tensor, k: int) -> torch.Tensor:
        """[lines, 1] filled with the k-th smallest (1-based) of P (rows sorted, >= 0, no NaN): the smallest
        float32 x with #{P <= x} >= k, searched on its int32 bit pattern (monotone for non-negative floats).
        Bracket: with j = ceil(k / L) - 1, min_l P[l, j] <= t <= max_l P[l, j]; steps interpolate by the
        counts (about 19 counts instead of 31 halvings), halving after 12."""
        L = P.shape[0]
        q = self.q
        qi = q.view(torch.int32)

        def count(b: int) -> int:
            qi.fill_(b)
            return int(torch.searchsorted(P, q, right=True).sum())

        col = P[:, -(-k // L) - 1].view(torch.int32)
        hi = int(col.max())
        chi = count(hi)
        lo = int(col.min()) - 1  # count(<= lo) < k <= count(<= hi); lo = -1: below everything
        clo = count(lo) if lo >= 0 else 0
        steps = 0
        while hi - lo > 1:
            if steps < 12:
                mid = lo + int((k - clo) / max(chi - clo, 1) * (hi - lo))
                mid = min(max(mid, lo + 1), hi - 1)
            else:
                mid = (lo + hi) // 2
            c = count(mid)
            steps += 1
            if c >= k:
                hi, chi = mid, c
            else:
                lo, clo = mid, c
        qi.fill_(hi)
        return q

    def mask(self, s: torch.Tensor, ratio: float, sparsity_type: str) -> torch.Tensor:
        L, m = self.V.shape
        n = L * m
        k = int(round(ratio * n))  # masks.lowest_mask's count
        if not k:
            return torch.zeros(self.shape, dtype=torch.bool)
        if k >= n:
            return torch.ones(self.shape, dtype=torch.bool)
        P = self.V * s[:, None]  # the metric's own float32 products, lines still sorted
        q = self._kth(P, k)
        below = torch.searchsorted(P, q, right=False).squeeze(1)  # #{P_l < t}
        le = torch.searchsorted(P, q, right=True).squeeze(1)  # #{P_l <= t}
        R = self.rank
        b = below.to(R.dtype)
        rows = self.axis == 0
        mask = R < (b[:, None] if rows else b[None, :])
        need = k - int(below.sum())
        if need:  # the first `need` weights equal to t in row-major order, from the lines that hold t
            lines = (le > below).nonzero().squeeze(1)
            lo, hi = below[lines].to(R.dtype), le[lines].to(R.dtype)
            if rows:
                sub = R[lines]
                r, c = ((sub >= lo[:, None]) & (sub < hi[:, None])).nonzero().unbind(1)
                flat = lines[r] * R.shape[1] + c
            else:
                sub = R[:, lines]
                r, c = ((sub >= lo[None, :]) & (sub < hi[None, :])).nonzero().unbind(1)
                flat = r * R.shape[1] + lines[c]
            mask.view(-1)[flat.sort().values[:need]] = True
        return mask

    @staticmethod
    def nbytes(w: torch.Tensor) -> int:
        return w.numel() * (4 + (2 if max(w.shape) < 2 ** 15 else 4))


def _two_of_four(planes: torch.Tensor, sparsity_type: str) -> torch.Tensor:
    """lowest_mask(metric, ·, "2:4") from the metric as planes [4, rows, blocks] (value j of every block)."""
    _, R, B = planes.shape
    a, b, c, d = planes.unbind(0)
    p, P = torch.minimum(a, b), torch.maximum(a, b)
    q, Q = torch.minimum(c, d), torch.maximum(c, d)
    u, v = torch.maximum(p, q), torch.minimum(P, Q)
    s2, s3 = torch.minimum(u, v), torch.maximum(u, v)  # the 2nd and 3rd smallest of each block
    out = (planes <= s2).permute(1, 2, 0).reshape(R, B * 4)
    tie = s2 == s3
    if bool(tie.any()):
        r, bl = tie.nonzero().unbind(1)
        blocks = planes[:, r, bl].t().contiguous()  # [ties, 4], each block in its order
        out.view(R, B, 4)[r, bl] = lowest_mask(blocks, 0.5, sparsity_type)
    return out


def _planes(a: torch.Tensor) -> torch.Tensor:
    R, C = a.shape
    return a.view(R, C // 4, 4).permute(2, 0, 1).contiguous()


class _RowScaled24:
    """gate/up under 2:4: metric = |W| × s[:, None]."""

    def __init__(self, w: torch.Tensor, sparsity_type: str):
        self.stype = sparsity_type
        a = w.detach().float().abs()
        self.base = _two_of_four(_planes(a), sparsity_type)
        R, C = a.shape
        x = a.view(R, C // 4, 4)
        lo, hi = torch.minimum(x.unsqueeze(2), x.unsqueeze(3)), torch.maximum(x.unsqueeze(2), x.unsqueeze(3))
        self.close = ((hi > lo) & (lo > 0) & (hi - lo <= CLOSE * hi)).flatten(1).any(1)
        a64 = a.double()
        self.min_nz = torch.where(a64 > 0, a64, torch.inf).amin(1)
        self.max_abs = a64.amax(1)

    def mask(self, s: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s64 = s.double()
        bad = self.close | (s64 <= 0) | (self.min_nz * s64 < 2 * F32_MIN_NORMAL) | (self.max_abs * s64 > F32_MAX / 4)
        bad &= self.max_abs > 0  # an all-zero row ties everywhere whatever its scale
        if not bool(bad.any()):
            return self.base
        out = self.base.clone()
        rows = bad.nonzero().squeeze(1)
        out[rows] = lowest_mask(w.detach()[rows].abs() * s[rows, None], 0.5, self.stype)
        return out

    @staticmethod
    def nbytes(w: torch.Tensor) -> int:
        return w.numel()


class _ColScaled24:
    """down under 2:4: metric = |W| × s[None, :]."""

    def __init__(self, w: torch.Tensor, sparsity_type: str):
        self.stype = sparsity_type
        self.planes = _planes(w.detach().float().abs())  # [4, rows, blocks]

    def mask(self, s: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        _, _, B = self.planes.shape
        return _two_of_four(self.planes * s.view(B, 4).t().unsqueeze(1), self.stype)

    @staticmethod
    def nbytes(w: torch.Tensor) -> int:
        return w.numel() * 4


class ScaledMasks:
    """The per-worker structure for one sparsity type over `targets` (their current, dense weights)."""

    def __init__(self, targets, sparsity_type: str):
        self.sparsity_type = sparsity_type
        self.parts = {}
        for t in targets:
            w = t.module.weight
            if not bool(torch.isfinite(w).all()):
                continue  # the ordinary path for this matrix
            if sparsity_type == "unstructured":
                part = _Unstructured(w, t.neuron_axis)
            else:
                if w.shape[1] % 4:
                    continue
                part = _RowScaled24(w, sparsity_type) if t.neuron_axis == 0 else _ColScaled24(w, sparsity_type)
            self.parts[(t.layer, t.kind)] = part

    @classmethod
    def build(cls, targets, req) -> ScaledMasks | None:
        """The structure for `req` over `targets`, or None where it does not apply or would not fit."""
        if not targets:
            return None
        w0 = targets[0].module.weight
        if not applies(req, w0.device, w0.dtype):
            return None
        part = _Unstructured if req.sparsity_type == "unstructured" else None
        need = sum(part.nbytes(t.module.weight) if part else
                   (_RowScaled24 if t.neuron_axis == 0 else _ColScaled24).nbytes(t.module.weight) for t in targets)
        if need > BUDGET_BYTES:
            log.info("incremental masks need %.1f GB: ranking each trial from scratch", need / 1e9)
            return None
        return cls(targets, req.sparsity_type)

    def covers(self, req) -> bool:
        """Whether `req` (a trial's request) prunes as this structure ranks."""
        return req.sparsity_type == self.sparsity_type and applies(req, torch.device("cpu"), torch.float32)

    def mask(self, t, req, scale: torch.Tensor) -> torch.Tensor | None:
        """The mask of target t for `req` (covered) with the neuron factor `scale` (float32, along t's neuron
        axis), or None where the ordinary path must compute it."""
        part = self.parts.get((t.layer, t.kind))
        if part is None or scale.device.type != "cpu":
            return None
        s = scale.reshape(-1)
        if not bool(torch.isfinite(s).all()) or bool(torch.signbit(s).any()):
            return None  # 0 × inf is NaN in the metric; a negative scale reverses the order
        if self.sparsity_type == "unstructured":
            return part.mask(s, req.sparsity_ratio, self.sparsity_type)
        return part.mask(s, t.module.weight)
