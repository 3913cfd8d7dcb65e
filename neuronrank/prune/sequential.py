"""Layer-by-layer calibration and pruning, in upstream Wanda's / SparseGPT's order.

The inputs of decoder layer 0 are captured for every calibration window. Then, for each layer in turn:
pass 1 runs every window through the layer with hooks gathering what the method needs (its observer in
the registry: "stats", ‖X‖² and TF/IDF sums through the statistics accumulator of engine/hooks.py, or
"hessian", the Hessian of each target's inputs);
the layer's targets are pruned; pass 2 runs every window through the pruned layer and its outputs
become the next layer's inputs. So a layer's statistics come from the outputs of the already pruned
earlier layers, and only one layer's inputs and outputs are held at a time. Windows go through one at
a time, as upstream does.

The metric and the mask are the one-pass path's (one_pass.py); only where the statistics come from
differs. SparseGPT replaces metric + mask by its reconstruction (sparsegpt.py).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from neuronrank.engine.hooks import LayerAccumulator, finish, install_hooks
from neuronrank.engine.models import decoder_body, decoder_layers, mlp_blocks
from neuronrank.errors import UserError
from neuronrank.prune.context import targets as layer_targets
from neuronrank.prune.one_pass import prune_targets
from neuronrank.prune.sparsegpt import Hessian, prune_weight


class _Stop(Exception):
    pass


def _out(o):
    return o[0] if isinstance(o, tuple) else o


@torch.no_grad()
def first_layer_inputs(model: nn.Module, windows: torch.Tensor):
    """(inputs [N, S, H] of decoder layer 0, the keyword arguments the layers are called with)."""
    layers = decoder_layers(model)
    device = next(model.parameters()).device
    got: dict = {"inps": []}

    def catch(module, args, kwargs):
        got["inps"].append(args[0] if args else kwargs["hidden_states"])
        got["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        raise _Stop

    h = layers[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        for w in windows:
            try:
                decoder_body(model)(input_ids=w[None].to(device), use_cache=False)
            except _Stop:
                pass
    finally:
        h.remove()
    return torch.cat(got["inps"]), got["kwargs"]


@torch.no_grad()
def prune_sequential(model: nn.Module, req, windows: torch.Tensor, progress=None,
                     ratios: dict[int, float] | None = None) -> dict:
    """Prune `model` in place as `req` (validated: unstructured or N:M) says, calibrating each layer on the
    already pruned model; `ratios` {layer: sparsity} (OWL's), else the request's ratio everywhere."""
    layers = decoder_layers(model)
    blocks = mlp_blocks(model)
    todo = set(req.pruned_layers(len(layers)))
    inps, kwargs = first_layer_inputs(model, windows)
    outs = torch.empty_like(inps)
    seqlen = inps.shape[1]
    for i, layer in enumerate(layers):
        if i in todo:
            targets = layer_targets(model, [i], req.targets)
            observe = _observer(req, blocks[i], targets, seqlen)
            try:
                for j in range(len(inps)):  # pass 1: statistics of this layer's (pruned-model) inputs
                    layer(inps[j:j + 1], **kwargs)
                    observe.commit()
            finally:
                observe.remove()
            observe.prune(req.sparsity_ratio if ratios is None else ratios[i])
        for j in range(len(inps)):  # pass 2: the (pruned) layer's outputs feed the next layer
            outs[j] = _out(layer(inps[j:j + 1], **kwargs))[0]
        inps, outs = outs, inps
        if progress is not None:
            progress(i + 1, len(layers))
    return {"layers": sorted(todo)}


def _observer(req, block, targets, seqlen):
    kind = req.method.observer
    if kind is None:
        raise UserError(f"{req.prune_method} has no calibration to run layer by layer")
    return OBSERVERS[kind](req, block, targets, seqlen)


class _StatsObserver:
    """The one-pass statistics of one layer (engine/hooks.py's accumulator), then the registry's metric."""

    def __init__(self, req, block, targets, seqlen):
        self.req, self.block, self.targets, self.seqlen = req, block, targets, seqlen
        self.acc = LayerAccumulator(block, 0, block.gate.weight.device, req.site)
        self.acc.seqlen = seqlen
        self.acc.skip_first = int(req.skip_first)
        self.acc.running_mean = True  # upstream Wanda's float32 running mean of ‖X‖² (bit-exact masks)
        self.handles = install_hooks(self.acc, shared_act=False)

    def commit(self):
        self.acc.commit()
        self.acc.window_offset += 1

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []

    def prune(self, ratio: float):
        stats = finish([self.acc], [self.block], self.req.site, None, 0, self.seqlen)  # one layer: index 0
        prune_targets([replace(t, layer=0) for t in self.targets], self.req, stats, ratios={0: ratio})


class _HessianObserver:
    """SparseGPT's: the Hessian of each target's inputs, then its OBS reconstruction."""

    def __init__(self, req, block, targets, seqlen):
        self.req, self.targets = req, targets
        self.hessians = [Hessian(t.module.in_features, t.module.weight.device) for t in targets]
        self.handles = [t.module.register_forward_pre_hook(self._hook(h)) for t, h in zip(targets, self.hessians)]

    @staticmethod
    def _hook(hess):
        def hook(module, args):  # returns None: a pre-hook's return value would replace the input
            hess.add(args[0])
        return hook

    def commit(self):
        pass

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []

    def prune(self, ratio: float):
        for t, hess in zip(self.targets, self.hessians):
            w = t.module.weight
            new = prune_weight(w, hess.H, ratio, self.req.sparsity_type)
            w.copy_(new.to(w.dtype))
            hess.H = None


OBSERVERS = {"stats": _StatsObserver, "hessian": _HessianObserver}  # config/methods.py: Method.observer
