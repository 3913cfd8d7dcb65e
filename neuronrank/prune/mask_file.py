"""Pruning masks as a file, so a pruned model can be fine-tuned without losing its sparsity.

    save_masks(model, path, linears, meta)   one packed-bit tensor per pruned linear, atomic write
    load_masks(path, model=None)             {module name: bool mask, True = pruned}, checked against model
    apply_masks(model, masks)                zero the pruned weights again (call after each optimizer step)
    read_metadata(path)                      method, ratio, type, protocol, ... as written

Format (safetensors): tensor `<module name>` (e.g. `model.layers.3.mlp.gate_proj`) is
`numpy.packbits(pruned, axis=-1)` of the module's weight, uint8 [rows, ceil(cols / 8)], big bit order,
bit 1 = the weight is pruned (zero). The metadata (strings) holds `format`, `method`, `ratio`, `type`,
`group`, `targets`, `layers`, `protocol` (JSON: the calibration and exponents that chose the masks),
`model` and `shapes` (JSON {name: [rows, cols]}). The mask is read from the pruned weights (w == 0), so it
is the sparsity pattern of every method, SparseGPT's reconstruction included.

Fine-tuning with the masks (the few lines the README shows):

    masks = load_masks("masks.safetensors", model)
    for batch in loader:
        model(**batch).loss.backward()
        optimizer.step(); optimizer.zero_grad()
        apply_masks(model, masks)          # the pruned weights are zero again
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from neuronrank.data.paths import atomic_write_bytes
from neuronrank.errors import UserError

FORMAT = "neuronrank-masks/1"


def _names(model: nn.Module) -> dict[int, str]:
    return {id(m): name for name, m in model.named_modules()}


def pack(pruned: torch.Tensor) -> np.ndarray:
    """[rows, cols] bool -> uint8 [rows, ceil(cols / 8)] (numpy.packbits, big bit order)."""
    return np.packbits(pruned.detach().cpu().numpy().astype(bool), axis=-1)


def unpack(bits: np.ndarray, shape) -> torch.Tensor:
    rows, cols = (int(s) for s in shape)
    if bits.shape != (rows, (cols + 7) // 8):
        raise UserError(f"mask of shape {tuple(bits.shape)} does not pack a {rows} x {cols} weight")
    return torch.from_numpy(np.unpackbits(bits, axis=-1, count=cols).astype(bool))


@torch.no_grad()
def save_masks(model: nn.Module, path, linears: list[nn.Linear], meta: dict) -> dict:
    """Write the masks (w == 0) of `linears` (modules of `model`) to `path` atomically ->
    {"path", "tensors", "pruned" (fraction of the masked weights), "bytes"}."""
    from safetensors.numpy import save

    names = _names(model)
    tensors, shapes, zeros, numel = {}, {}, 0, 0
    for lin in linears:
        name = names[id(lin)]
        pruned = lin.weight == 0
        tensors[name] = pack(pruned)
        shapes[name] = list(lin.weight.shape)
        zeros += int(pruned.sum())
        numel += pruned.numel()
    text = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in meta.items()}
    text.update(format=FORMAT, shapes=json.dumps(shapes), bitorder="big", bit="1 = pruned")
    data = save(tensors, metadata=text)
    out = Path(path).expanduser().resolve()
    try:
        atomic_write_bytes(out, data)
    except OSError as e:
        raise UserError(f"cannot write the masks to {out}: {e.strerror or e}") from e
    return {"path": str(out), "tensors": len(tensors), "pruned": zeros / numel if numel else 0.0,
            "bytes": len(data)}


def read_metadata(path) -> dict:
    """The file's metadata, JSON values decoded."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            raw = f.metadata() or {}
    except Exception as e:  # a missing file, or safetensors' own error for a damaged header
        raise UserError(f"{path} is not a readable mask file ({e})") from e
    if raw.get("format") != FORMAT:
        raise UserError(f"{path} is not a NeuronRank mask file (format {raw.get('format')!r})")
    out = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def load_masks(path, model: nn.Module | None = None, device=None) -> dict[str, torch.Tensor]:
    """{module name: bool mask (True = pruned)}; with `model`, every name must be one of its linears of
    the same shape, and the masks move to that weight's device."""
    from safetensors.numpy import load_file

    meta = read_metadata(path)
    shapes = meta["shapes"]
    bits = load_file(str(path))
    masks = {name: unpack(b, shapes[name]) for name, b in bits.items()}
    if model is not None:
        modules = dict(model.named_modules())
        for name, m in masks.items():
            lin = modules.get(name)
            if lin is None or not hasattr(lin, "weight"):
                raise UserError(f"the model has no module {name} (the masks were saved for another model)")
            if tuple(lin.weight.shape) != tuple(m.shape):
                raise UserError(f"{name}: weight {tuple(lin.weight.shape)} but mask {tuple(m.shape)}")
            masks[name] = m.to(lin.weight.device)
    elif device is not None:
        masks = {k: v.to(device) for k, v in masks.items()}
    return masks


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero every pruned weight (in place, no autograd): after each optimizer step while fine-tuning."""
    modules = dict(model.named_modules())
    for name, m in masks.items():
        modules[name].weight.masked_fill_(m, 0)
