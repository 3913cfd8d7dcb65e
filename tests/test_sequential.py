"""Layer-by-layer (sequential) calibration and SparseGPT, each against an independent reference.

The references share no code with sequential.py / sparsegpt.py: a layer's statistics come from a
plain one-pass `collect` over the whole model whose earlier layers are already pruned (the definition
of upstream Wanda's order), masks from numpy argsort, and SparseGPT from the textbook OBS update with
a dense inverse Hessian, one column at a time, in float64.
"""

import numpy as np
import pytest
import torch

from neuronrank import UserError
from neuronrank.models import mlp_blocks
from neuronrank.pruning import prune
from neuronrank.requests import PruneRequest
from neuronrank.sparsegpt import prune_weight
from neuronrank.stats import collect
from tests.conftest import make_tiny

ROLES = ("gate", "up", "down")


def windows():
    return torch.randint(0, 96, (6, 16), generator=torch.Generator().manual_seed(1))


def lowest(metric: np.ndarray, k: int) -> np.ndarray:
    mask = np.zeros(metric.size, bool)
    mask[np.argsort(metric.ravel(), kind="stable")[:k]] = True
    return mask.reshape(metric.shape)


def reference_mask(metric: np.ndarray, ratio: float, sparsity_type: str, row: bool) -> np.ndarray:
    if sparsity_type == "2:4":
        blocks = metric.reshape(metric.shape[0], -1, 4)
        out = np.zeros_like(blocks, bool)
        idx = np.argsort(blocks, axis=2, kind="stable")[:, :, :2]
        np.put_along_axis(out, idx, True, axis=2)
        return out.reshape(metric.shape)
    if row:
        return np.stack([lowest(r, round(ratio * r.size)) for r in metric])
    return lowest(metric, round(ratio * metric.size))


@torch.no_grad()
def reference_statistics_prune(model, method, ratio, sparsity_type):
    """Upstream's order by definition: layer i's statistics from a full forward of the model whose
    layers < i are already pruned."""
    for i, b in enumerate(mlp_blocks(model)):
        stats = collect(model, [windows()])
        for role in ROLES:
            lin = getattr(b, role)
            w = lin.weight.double().numpy()
            if method == "wanda":
                norm = np.sqrt(stats.input_sq["down_in" if role == "down" else "mlp_in"][i])
                metric = np.abs(w) * norm[None, :]
            else:
                s = stats.w_norm[i] * stats.tf[i] * stats.idf[i]
                metric = np.abs(w) * (s[None, :] if role == "down" else s[:, None])
            mask = reference_mask(metric, ratio, sparsity_type, row=method == "wanda")
            lin.weight[torch.from_numpy(mask)] = 0


@pytest.mark.parametrize("method", ["wanda", "neuronrank_old"])
@pytest.mark.parametrize("sparsity_type", ["unstructured", "2:4"])
def test_sequential_equals_layer_by_layer_reference(method, sparsity_type):
    ours, ref = make_tiny(layers=3, inter=64), make_tiny(layers=3, inter=64)
    prune(ours, PruneRequest(prune_method=method, sparsity_ratio=0.5, sparsity_type=sparsity_type,
                             calibration="sequential"), windows=windows())
    reference_statistics_prune(ref, method, 0.5, sparsity_type)
    for a, b in zip(mlp_blocks(ours), mlp_blocks(ref)):
        for role in ROLES:
            assert torch.equal(getattr(a, role).weight == 0, getattr(b, role).weight == 0), (a.layer, role)


def test_sequential_differs_from_one_pass_after_the_first_layer():
    seq, one = make_tiny(layers=3, inter=64), make_tiny(layers=3, inter=64)
    prune(seq, PruneRequest(prune_method="wanda", calibration="sequential"), windows=windows())
    prune(one, PruneRequest(prune_method="wanda"), collect(one, [windows()]))
    same = [torch.equal(a.down.weight == 0, b.down.weight == 0) for a, b in zip(mlp_blocks(seq), mlp_blocks(one))]
    assert same[0] and not all(same[1:])  # layer 0 sees the same (dense) inputs either way


# ----------------------------------------------------------------------------------------------
# SparseGPT


def obs_reference(W, H, ratio, sparsity_type, blocksize, percdamp=0.01):
    """Textbook OBS, float64, dense inverse: for each column in order, zero the masked weights and
    move the error onto the remaining columns with the inverse Hessian of the columns not yet
    processed; then eliminate the column from that inverse. The mask rule is SparseGPT's: per block
    of columns (or per M columns for N:M), the lowest w² / [H_{j:,j:}⁻¹]_00 at that moment."""
    W = W.double().clone()
    H = H.double().clone()
    cols = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += percdamp * torch.mean(torch.diag(H)) * torch.eye(cols, dtype=H.dtype)
    Hinv = torch.linalg.inv(H)
    d2 = torch.tensor([torch.linalg.inv(H[j:, j:])[0, 0] for j in range(cols)], dtype=H.dtype)
    mask = torch.zeros_like(W, dtype=torch.bool)
    for i in range(cols):
        if sparsity_type == "unstructured" and i % blocksize == 0:
            blk = slice(i, min(i + blocksize, cols))
            score = (W[:, blk] ** 2 / d2[blk][None, :]).numpy()
            mask[:, blk] = torch.from_numpy(lowest(score, round(ratio * score.size)))
        if sparsity_type == "2:4" and i % 4 == 0:
            score = (W[:, i:i + 4] ** 2 / d2[i:i + 4][None, :]).numpy()
            mask[:, i:i + 4] = torch.from_numpy(reference_mask(score, 0.5, "2:4", False))
        w = W[:, i].clone()
        q = torch.where(mask[:, i], torch.zeros_like(w), w)
        err = (w - q) / Hinv[i, i]
        W[:, i:] -= err[:, None] * Hinv[i, i:][None, :]
        W[:, i] = q
        Hinv = Hinv - Hinv[:, i:i + 1] @ Hinv[i:i + 1, :] / Hinv[i, i]  # eliminate column i
    return W


def layer_hessian(model, layer: int, role: str):
    lin = getattr(mlp_blocks(model)[layer], role)
    xs = []
    h = lin.register_forward_pre_hook(lambda m, a: xs.append(a[0].detach().double().reshape(-1, a[0].shape[-1])))
    with torch.no_grad():
        for w in windows():
            model(w[None])
    h.remove()
    X = torch.cat(xs)
    return lin.weight.detach(), 2 * X.t() @ X / len(windows())


@pytest.mark.parametrize("sparsity_type", ["unstructured", "2:4"])
def test_sparsegpt_solver_equals_dense_obs_reference(sparsity_type):
    model = make_tiny(layers=2, inter=64)
    for role in ROLES:
        W, H = layer_hessian(model, 1, role)
        H[3, :] = H[:, 3] = 0  # one dead input
        got = prune_weight(W, H.float(), 0.5, sparsity_type, blocksize=16)
        ref = obs_reference(W, H, 0.5, sparsity_type, blocksize=16)
        assert torch.equal(got == 0, ref.float() == 0), role
        torch.testing.assert_close(got.double(), ref, rtol=1e-3, atol=1e-3)
        assert (got == 0).double().mean().item() >= 0.5
        # the reconstruction beats zeroing the same weights: lower output error on the calibration inputs
        plain = W.double().masked_fill(ref == 0, 0)
        err = lambda V: torch.trace((V - W.double()) @ H.double() @ (V - W.double()).t())  # noqa: E731
        assert err(ref) < err(plain)


@torch.no_grad()
def test_sparsegpt_sequential_equals_layer_by_layer_reference():
    ours, ref = make_tiny(layers=3, inter=64), make_tiny(layers=3, inter=64)
    prune(ours, PruneRequest(prune_method="sparsegpt", sparsity_ratio=0.5), windows=windows())
    for i, b in enumerate(mlp_blocks(ref)):
        hs = {role: layer_hessian(ref, i, role)[1] for role in ROLES}  # all from the same layer inputs
        for role in ROLES:
            lin = getattr(b, role)
            lin.weight.copy_(obs_reference(lin.weight, hs[role], 0.5, "unstructured", blocksize=128).float())
    for a, b in zip(mlp_blocks(ours), mlp_blocks(ref)):
        for role in ROLES:
            wa, wb = getattr(a, role).weight, getattr(b, role).weight
            assert (wa == 0).double().mean() == 0.5
            assert ((wa == 0) != (wb == 0)).double().mean() < 0.01, (a.layer, role)
            torch.testing.assert_close(wa, wb, rtol=0, atol=2e-3)


def test_sequential_requests_are_checked():
    with pytest.raises(UserError, match="sequential"):
        PruneRequest(prune_method="sparsegpt", sparsity_type="structured", sparsity_ratio=0.2).validate()
    assert PruneRequest(prune_method="sparsegpt").normalized().calibration == "sequential"
    assert PruneRequest(prune_method="magnitude", calibration="sequential").normalized().calibration is None
    with pytest.raises(UserError, match="calibration windows"):
        prune(make_tiny(), PruneRequest(prune_method="wanda", calibration="sequential"))
