"""What pruning addresses and what a method's scorers may use.

    Target, targets(model, layers, which)   the linears to prune: gate/up/down of the MLP, and with
                                            --targets all the attention projections q/k/v/o
    MetricInputs                            the context a registry scorer (config/methods.py) gets: the
                                            statistics, the method's neuron scores, the seed, the
                                            exponents, tensors on the weight's device
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from neuronrank.config.methods import Method
from neuronrank.engine.models import mlp_blocks
from neuronrank.errors import UserError

MLP_KINDS = ("gate", "up", "down")
ATTN_KINDS = ("q", "k", "v", "o")
_INPUT_NORM = {"gate": "mlp_in", "up": "mlp_in", "down": "down_in", "q": "attn_in", "k": "attn_in",
               "v": "attn_in", "o": "o_in"}


@dataclass(frozen=True)
class Target:
    layer: int
    kind: str  # module kind: gate | up | down | q | k | v | o
    module: nn.Linear

    @property
    def neuron_axis(self) -> int | None:
        """Axis of W that indexes MLP neurons: rows of gate/up, columns of down; None for attention."""
        return {"gate": 0, "up": 0, "down": 1}.get(self.kind)


def targets(model: nn.Module, layers: list[int], which: str = "mlp") -> list[Target]:
    out = []
    for b in mlp_blocks(model):
        if b.layer not in layers:
            continue
        out += [Target(b.layer, "gate", b.gate), Target(b.layer, "up", b.up), Target(b.layer, "down", b.down)]
        if which == "all":
            out += [Target(b.layer, k, b.attn_projections[k]) for k in ATTN_KINDS if k in b.attn_projections]
    return out


@dataclass
class MetricInputs:
    """What a method's metric or neuron score may use. `stats` is indexed by t.layer; `neuron_scores`
    ([layers, width]) are the method's own neuron scores, computed on first use."""

    stats: object | None = None  # NeuronStats
    neuron_scores: np.ndarray | None = None
    seed: int = 0
    method: Method | None = None
    exponents: tuple = (1.0, 1.0, 1.0)  # α, β, γ of NeuronRank-OLD's score
    model: nn.Module | None = None  # for neuron scores of the weights alone (no statistics)
    fluctuation: str = "flap"  # FLAP's fluctuation: its own estimator, or the textbook "variance"

    @property
    def shape(self) -> tuple[int, int]:
        """(layers, width) of the neuron scores."""
        if self.stats is not None:
            return self.stats.n_layers, self.stats.width
        blocks = mlp_blocks(self.model)
        return len(blocks), blocks[0].width

    def input_norm(self, t: Target, device) -> torch.Tensor:
        """Wanda's ‖X_k‖₂ of t's inputs, float32 on `device`."""
        if self.stats is None:
            raise UserError("this method needs calibration statistics")
        key = _INPUT_NORM[t.kind]
        if key not in self.stats.input_sq:
            raise UserError(f"the statistics have no input norms for {t.kind}_proj")
        # ‖X‖ as upstream Wanda computes it: a float32 square root of the float32 sum (a float64 root
        # rounded to float32 differs in the last bit often enough to flip near-ties of |W|·‖X‖)
        return torch.sqrt(torch.from_numpy(self.stats.input_sq[key][t.layer]).to(device, torch.float32))

    def neuron_factor(self, t: Target, device) -> torch.Tensor:
        """The neuron scores of t's layer, float32 on `device`, along t's neuron axis (to scale |W| by)."""
        if self.neuron_scores is None:
            self.neuron_scores = self.method.neuron_score(self)
        s = torch.from_numpy(self.neuron_scores[t.layer]).to(device, torch.float32)
        return s[:, None] if t.neuron_axis == 0 else s[None, :]

    def generator(self, t: Target) -> torch.Generator:
        g = torch.Generator()
        # deterministic across processes (Python's str hash is salted per process)
        g.manual_seed((self.seed * 1_000_003 + t.layer * 16 + (MLP_KINDS + ATTN_KINDS).index(t.kind)) & 0x7FFF_FFFF)
        return g

    def noise(self, t: Target, w: torch.Tensor) -> torch.Tensor:
        """Uniform noise of w's shape on w's device, seeded per target."""
        return torch.rand(w.shape, generator=self.generator(t)).to(w.device)

    def down_column_sq(self) -> list[torch.Tensor]:
        """Σ_i W_down[i, j]² per MLP neuron j of every layer, float32 (on the CPU), as FLAP computes it."""
        return [b.down.weight.detach().float().pow(2).sum(dim=0).cpu() for b in mlp_blocks(self.model)]

    def gate_norms(self) -> np.ndarray:
        """[layers, width] ‖gate_proj row‖₂ from the model's weights (float64)."""
        return np.stack([torch.linalg.vector_norm(b.gate.weight.detach(), dim=1, dtype=torch.float64).cpu().numpy()
                         for b in mlp_blocks(self.model)])
