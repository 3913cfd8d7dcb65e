"""The tokens an MLP neuron promotes and suppresses (Neuronpedia's logit view). numpy only: the app
process never imports torch.

A neuron i of layer L writes its activation times down_proj's column i into the residual stream; read
straight through the final norm's weight g and the unembedding W_U, its direct effect on the logits is
    v = W_U · (g ⊙ W_down[:, i])      ([vocab])
The highest entries are the tokens it promotes, the lowest those it suppresses (the norm's scaling by
the residual's RMS is the same for every token, so it does not change the order). The weights are read
from the model's safetensors files (memory-mapped; the converted copy of a GGUF).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from neuronrank.data.specs import weights_folder
from neuronrank.errors import UserError

GEMMA_LIKE = ("gemma", "gemma2", "gemma3", "gemma3_text")  # RMSNorm scales by (1 + weight)


@dataclass
class Unembedding:
    folder: Path
    w_u: np.ndarray  # [vocab, hidden] float32
    norm: np.ndarray  # [hidden] the final norm's effective scale
    names: dict  # tensor name -> safetensors file

    def direct_effect(self, layer: int, neuron: int) -> np.ndarray:
        """v = W_U · (g ⊙ W_down[:, neuron]) -> [vocab] float32."""
        from safetensors import safe_open

        name = f"model.layers.{layer}.mlp.down_proj.weight"
        if name not in self.names:
            raise UserError(f"the model has no {name}")
        with safe_open(self.names[name], framework="numpy") as f:
            sl = f.get_slice(name)
            rows, cols = sl.get_shape()
            if not 0 <= neuron < cols:
                raise UserError(f"neuron {neuron} is outside layer {layer}'s {cols} neurons")
            col = np.asarray(sl[:, neuron:neuron + 1], dtype=np.float32)[:, 0]
        return self.w_u @ (self.norm * col)

    def neuron_tokens(self, layer: int, neuron: int, k: int = 10) -> dict:
        """{"promoted": [(token id, logit effect)] highest first, "suppressed": [...] lowest first}."""
        v = self.direct_effect(layer, neuron)
        top = np.argsort(-v, kind="stable")[:k]
        bottom = np.argsort(v, kind="stable")[:k]
        return {"promoted": [(int(i), float(v[i])) for i in top],
                "suppressed": [(int(i), float(v[i])) for i in bottom]}


def _tensor_files(folder: Path) -> dict:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {k: str(folder / v) for k, v in weight_map.items()}
    from safetensors import safe_open

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="numpy") as h:
            out.update({k: str(f) for k in h.keys()})
    return out


def _read(names: dict, name: str) -> np.ndarray:
    from safetensors import safe_open

    with safe_open(names[name], framework="numpy") as f:
        return np.asarray(f.get_tensor(name), dtype=np.float32)


@lru_cache(maxsize=2)
def load(spec: str) -> Unembedding:
    """The unembedding and final norm of a model (cached per process: ~100 MB for a 50k vocabulary)."""
    folder = weights_folder(spec)
    config = json.loads((folder / "config.json").read_text())
    names = _tensor_files(folder)
    head = "lm_head.weight" if "lm_head.weight" in names else "model.embed_tokens.weight"  # tied
    if head not in names or "model.norm.weight" not in names:
        raise UserError(f"cannot find the unembedding / final norm of {spec} (not a LLaMA-style checkpoint)")
    norm = _read(names, "model.norm.weight")
    if config.get("model_type") in GEMMA_LIKE:
        norm = norm + 1.0
    return Unembedding(folder, _read(names, head), norm, names)
