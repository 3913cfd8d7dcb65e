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
from neuronrank.engine.models import mlp_blocks
from neuronrank.prune import prune
from neuronrank.config.requests import PruneRequest
from neuronrank.prune.sparsegpt import prune_weight
from neuronrank.engine.collect import collect
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
# upstream Wanda's numerics, bit for bit


def tied_model():
    """A tiny model in which residual features 3 and 7 are identical for every token (embedding columns,
    norm weights and the rows written by o_proj / down_proj duplicated) and the matrices reading them have
    duplicated columns: |W|·‖X‖ is then exactly tied at (row, 3) and (row, 7) of every q/k/v/gate/up row,
    so the tie rule decides masks, as Q4 weights make it decide them on real models."""
    model = make_tiny(layers=3, hidden=32, inter=64)
    a, b = 3, 7
    with torch.no_grad():
        model.model.embed_tokens.weight[:, b] = model.model.embed_tokens.weight[:, a]
        for layer in model.model.layers:
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight[b] = norm.weight[a]
            for lin in (layer.self_attn.o_proj, layer.mlp.down_proj):
                lin.weight[b] = lin.weight[a]
            for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                        layer.mlp.gate_proj, layer.mlp.up_proj):
                lin.weight[:, b] = lin.weight[:, a]
    return model


@torch.no_grad()
def upstream_wanda(model, ws, ratio, nm=None):
    """Upstream Wanda's prune_wanda as its paper's code runs it: layer 0's inputs captured, then per layer
    every window through the layer with each linear's ‖X‖² kept as WrappedGPT does (a float32 running mean
    of torch.norm(X)², one call per window), |W|·sqrt of it, a stable sort per row (or topk per M columns),
    then the pruned layer's outputs feed the next."""
    layers = model.model.layers
    got = {}

    class Stop(Exception):
        pass

    def catch(module, args, kwargs):
        got.setdefault("inps", []).append(args[0] if args else kwargs["hidden_states"])
        got["kw"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        raise Stop

    h = layers[0].register_forward_pre_hook(catch, with_kwargs=True)
    for w in ws:
        try:
            model(w[None], use_cache=False)  # as upstream sets model.config.use_cache = False
        except Stop:
            pass
    h.remove()
    inps, kw = torch.cat(got["inps"]), got["kw"]
    for layer in layers:
        lins = {n: m for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)}
        mean = {n: torch.zeros(m.in_features) for n, m in lins.items()}
        count = dict.fromkeys(lins, 0)

        def hook(n):
            def f(m, inp, out):
                x = inp[0].reshape(-1, inp[0].shape[-1]).t().float()
                mean[n] *= count[n] / (count[n] + 1)
                count[n] += 1
                mean[n] += torch.norm(x, p=2, dim=1) ** 2 / count[n]
            return f

        hs = [m.register_forward_hook(hook(n)) for n, m in lins.items()]
        for j in range(len(inps)):
            layer(inps[j:j + 1], **kw)
        for h in hs:
            h.remove()
        for n, m in lins.items():
            metric = torch.abs(m.weight) * torch.sqrt(mean[n].reshape(1, -1))
            mask = torch.zeros_like(metric, dtype=torch.bool)
            if nm:
                for ii in range(0, metric.shape[1], nm[1]):
                    idx = torch.topk(metric[:, ii:ii + nm[1]].float(), nm[0], dim=1, largest=False)[1]
                    mask.scatter_(1, ii + idx, True)
            else:
                mask.scatter_(1, torch.sort(metric, dim=-1, stable=True)[1][:, :int(metric.shape[1] * ratio)], True)
            m.weight[mask] = 0
        inps = torch.cat([layer(inps[j:j + 1], **kw) for j in range(len(inps))])


@pytest.mark.parametrize("sparsity_type", ["unstructured", "2:4"])
def test_sequential_wanda_reproduces_upstream_masks_bit_for_bit(sparsity_type):
    """All linears, per row: the masks equal upstream's algorithm's exactly, ties included (on the embedded
    model: 0 of 106,168,320 weights differ; parity/wanda_upstream_masks.py)."""
    ours, ref = tied_model(), tied_model()
    ws = windows()
    prune(ours, PruneRequest(prune_method="wanda", sparsity_ratio=0.5, sparsity_type=sparsity_type, targets="all",
                             calibration="sequential"), windows=ws)
    upstream_wanda(ref, ws, 0.5, None if sparsity_type == "unstructured" else (2, 4))
    lins = lambda m: {n: x.weight for n, x in m.named_modules() if isinstance(x, torch.nn.Linear)  # noqa: E731
                      and ".layers." in n}
    a, b = lins(ours), lins(ref)
    assert a.keys() == b.keys() and len(a) == 21
    for n in a:
        assert torch.equal(a[n] == 0, b[n] == 0), n
    if sparsity_type == "unstructured":  # the ties were there and fell to the lower index, as upstream's
        reads = [w for n, w in b.items() if not n.endswith(("o_proj", "down_proj"))]
        assert sum(int(((w[:, 3] == 0) & (w[:, 7] != 0)).sum()) for w in reads) > 0
        assert sum(int(((w[:, 7] == 0) & (w[:, 3] != 0)).sum()) for w in reads) == 0


def test_row_ties_fall_to_the_lowest_index():
    from neuronrank.prune.masks import lowest_mask

    metric = torch.tensor([[1.0, 2.0, 1.0, 1.0, 3.0, 1.0], [5.0, 5.0, 5.0, 5.0, 5.0, 5.0]])
    assert lowest_mask(metric, 0.5, group="row").tolist() == [[True, False, True, True, False, False],
                                                                [True, True, True, False, False, False]]


def test_running_mean_input_norms_are_wrappedgpts():
    """Layer-by-layer statistics keep ‖X‖² as upstream's WrappedGPT does: float32, a running mean over
    calls (x *= n/(n+b); x += ‖X‖²/n), bit for bit; one-pass statistics keep the float64 sum."""
    from neuronrank.engine.hooks import LayerAccumulator as _LayerAccumulator

    block = mlp_blocks(make_tiny())[0]
    xs = [torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(i)) * (i + 1) for i in range(5)]
    for skip in (0, 2):  # --skip-first: the same mean over each window's positions from N on
        acc = _LayerAccumulator(block, 0, "cpu", "gate")
        acc.running_mean, acc.seqlen, acc.skip_first = True, 16, skip
        mean, n = torch.zeros(32), 0
        for x in xs:
            acc.add_input("mlp_in", x)
            acc.commit()
            mean *= n / (n + 1)
            n += 1
            mean += torch.norm(x[:, skip:].reshape(-1, 32).t().float(), p=2, dim=1) ** 2 / n
        assert acc.input_sq["mlp_in"].dtype == torch.float32 and torch.equal(acc.input_sq["mlp_in"], mean), skip
    one = _LayerAccumulator(block, 0, "cpu", "gate")
    for x in xs:
        one.add_input("mlp_in", x)
        one.commit()
    want = sum((x.double().reshape(-1, 32) ** 2).sum(0) for x in xs)
    assert one.input_sq["mlp_in"].dtype == torch.float64 and torch.allclose(one.input_sq["mlp_in"], want, rtol=1e-6)


def test_wanda_norm_is_a_float32_root_as_upstream_takes_it():
    """‖X‖ = torch.sqrt of the float32 ‖X‖², as upstream's torch.sqrt(scaler_row): a float64 root rounded to
    float32 differs from it in the last bit for a sizeable share of values (~17 % on this CPU), enough
    to flip near-ties of |W|·‖X‖ on quantized weights."""
    from neuronrank.analysis.neuron_stats import NeuronStats
    from neuronrank.prune.context import MetricInputs, targets

    model = make_tiny(hidden=256)
    stats = collect(model, [windows()])
    sq = np.random.default_rng(0).uniform(1, 1e4, (2, 256)).astype(np.float32).astype(np.float64)
    stats = NeuronStats(**{**stats.__dict__, "input_sq": {**stats.input_sq, "mlp_in": sq}})
    t = targets(model, [1], "mlp")[0]
    got = MetricInputs(stats=stats).input_norm(t, "cpu")
    assert torch.equal(got, torch.sqrt(torch.from_numpy(sq[1]).float()))


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
