"""SparseGPT (Frantar & Alistarh 2023): prune one linear layer and reconstruct its kept weights.

For a layer with inputs X (columns = tokens), H = 2 X Xᵀ / N (N = calibration windows, as upstream
accumulates it), dampened by 0.01 · mean(diag H). The columns are processed left to right in blocks of
128: a column's pruned weights are zeroed and the error they cause, (w - q) / [H⁻¹]_ii, is spread
over the not yet processed columns through the row of the inverse Hessian — the OBS update — using
the upper Cholesky factor of H⁻¹ (its row i is the inverse Hessian of columns i.. with 0..i-1
eliminated). Within a block the updates are applied at once; across blocks lazily, which is the same
arithmetic in fewer, larger matrix products.

Mask selection ("adaptive"): unstructured, per block of 128 columns, the lowest `ratio` of
w² / [U]_jj² over the whole block (exactly round(ratio × block size) entries: the project's tie rule;
upstream prunes every entry ≤ the value at index int(n·r)); N:M, the N lowest of each M consecutive
columns of a row, chosen when the solver reaches the group.
"""

from __future__ import annotations

import torch

from neuronrank.config.methods import nm
from neuronrank.prune.masks import lowest_mask

BLOCKSIZE = 128
PERCDAMP = 0.01


class Hessian:
    """Running H = 2/N Σ XᵀX of one linear layer's inputs, float32 on the layer's device (upstream's)."""

    def __init__(self, columns: int, device):
        self.H = torch.zeros(columns, columns, device=device, dtype=torch.float32)
        self.nsamples = 0

    def add(self, x: torch.Tensor) -> None:
        """x: [windows, seq, columns] (or [tokens, columns] for one window) inputs of the layer."""
        n = x.shape[0] if x.ndim == 3 else 1
        x = x.reshape(-1, x.shape[-1]).float()
        self.H.mul_(self.nsamples / (self.nsamples + n))
        self.nsamples += n
        x = x.mul((2 / self.nsamples) ** 0.5)
        self.H.addmm_(x.t(), x)


@torch.no_grad()
def prune_weight(W: torch.Tensor, H: torch.Tensor, ratio: float, sparsity_type: str = "unstructured",
                 blocksize: int = BLOCKSIZE, percdamp: float = PERCDAMP) -> torch.Tensor:
    """The pruned and reconstructed weight (float32) of a [rows, columns] W given its inputs' H."""
    W = W.detach().float().clone()
    H = H.clone()
    rows, cols = W.shape
    dead = torch.diag(H) == 0  # inputs never seen: the weight cannot matter, the Hessian must invert
    H[dead, dead] = 1
    W[:, dead] = 0
    idx = torch.arange(cols, device=H.device)
    H[idx, idx] += percdamp * torch.mean(torch.diag(H))
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    n, m = nm(sparsity_type) if ":" in sparsity_type else (0, 0)
    if n and blocksize % m:
        raise ValueError(f"blocksize {blocksize} must be a multiple of {m}")
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        d1 = torch.diag(U1)
        if n:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        else:
            mask1 = lowest_mask(W1 ** 2 / d1[None, :] ** 2, ratio, "unstructured", "matrix")
        for i in range(i2 - i1):
            w = W1[:, i]
            if n and i % m == 0:
                score = W1[:, i:i + m] ** 2 / d1[None, i:i + m] ** 2
                mask1[:, i:i + m] = lowest_mask(score, n / m, sparsity_type)
            q = w.masked_fill(mask1[:, i], 0)
            Q1[:, i] = q
            err = (w - q) / U1[i, i]
            W1[:, i:] -= err[:, None] * U1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return W
