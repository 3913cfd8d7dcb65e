"""Which weights a metric prunes: the lowest entries of each comparison group, by one of two tie rules
(config/methods.py TIE_RULES; a method names its own, OWL uses "upstream"):

    exact       exactly round(ratio × group size) entries, ties at the threshold broken towards the lowest
                index (the project's rule)
    upstream    the originals': per row the first int(ratio × n) of a stable sort (upstream Wanda, OWL,
                RIA's per_outneuron); per matrix every entry <= the value at index int(ratio × n) of the
                sorted matrix (Wanda's prune_magnitude, RIA: ties and one more are pruned; at
                int(ratio × n) = 0 nothing is)

Groups: `matrix` (one threshold per matrix — the original NeuronRank-OLD and magnitude semantics),
`row` (per output row, Wanda's), or N:M blocks of M consecutive inputs in every row (the N lowest of each,
either rule).
"""

from __future__ import annotations

import torch

from neuronrank.config.methods import nm
from neuronrank.errors import UserError


def lowest_mask(metric: torch.Tensor, ratio: float, sparsity_type: str = "unstructured",
                group: str = "matrix", rule: str = "exact") -> torch.Tensor:
    """Boolean mask (True = prune) of the lowest entries of each group by `rule` (exact: round(ratio × group
    size) of them)."""
    mask = torch.zeros(metric.shape, dtype=torch.bool, device=metric.device)
    if (":" in sparsity_type or group == "row") and metric.dtype in (torch.float16, torch.bfloat16):
        metric = metric.float()  # topk's tie order per dtype: keep these paths' masks as they were
    if ":" in sparsity_type:
        n, m = nm(sparsity_type)
        rows, cols = metric.shape
        if cols % m:
            raise UserError(f"{sparsity_type} needs the input size ({cols}) to be a multiple of {m}")
        blocks = metric.reshape(rows, cols // m, m)
        idx = blocks.topk(n, dim=2, largest=False).indices
        return mask.reshape(rows, cols // m, m).scatter_(2, idx, True).reshape(rows, cols)
    if group == "row":  # upstream Wanda's rule: a stable sort, ties pruned lowest index first
        k = int(metric.shape[1] * ratio) if rule == "upstream" else int(round(ratio * metric.shape[1]))
        if k:
            mask.scatter_(1, torch.sort(metric, dim=1, stable=True).indices[:, :k], True)
        return mask
    if rule == "upstream":
        k = min(int(metric.numel() * ratio), metric.numel() - 1)
        if not k:
            return mask
        flat = metric.reshape(-1)
        t = torch.sort(flat).values[k] if flat.is_cuda else torch.kthvalue(flat, k + 1).values
        return metric <= t
    k = int(round(ratio * metric.numel()))
    if not k:
        return mask
    return lowest_k_flat(metric.reshape(-1), k).view(metric.shape)


def lowest_k_flat(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of exactly the k smallest entries of a 1-D tensor, ties at the threshold broken towards
    the lowest index (deterministic on every device).

    A threshold and comparisons instead of topk(k) with k ~ half a 45M-element matrix (which
    materialises k sorted values and indices and scatters them): the k-th value by selection on a CPU
    (kthvalue), by one radix sort on a GPU (kthvalue there is a one-block-per-slice kernel); then every
    entry below it, plus the first (k - #below) entries equal to it. No host sync.
    """
    n = flat.numel()
    if k >= n:
        return torch.ones_like(flat, dtype=torch.bool)
    if flat.is_cuda:
        t = torch.sort(flat).values[k - 1]
    else:
        t = torch.kthvalue(flat, k).values
    below = flat < t
    eq = flat == t
    need = k - below.sum()
    idx_dtype = torch.int32 if n < 2**31 else torch.int64
    return below.logical_or_(eq.logical_and_(eq.cumsum(0, dtype=idx_dtype) <= need))


_BITS = {8: torch.int64, 4: torch.int32, 2: torch.int16}


def zero_masked_(w: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """w.masked_fill_(mask, 0), bit for bit (+0.0 where masked, every other bit pattern kept, NaN and inf
    included), as one multiply of w's bit pattern by the kept mask: several times faster than masked_fill_
    on a CPU, which a search pays once per matrix per trial."""
    bits = _BITS.get(w.element_size()) if w.is_floating_point() else None
    if bits is None:
        return w.masked_fill_(mask, 0)
    view = w.view(bits)
    torch.mul(view, mask.logical_not(), out=view)
    return w
