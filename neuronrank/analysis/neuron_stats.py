"""The result of a statistics pass: per-neuron additive sums (numpy and pandas only, no torch).

`neuronrank.engine.collect.collect` produces a `NeuronStats`; the statistics cache stores and loads it, the app
reads it without ever importing torch. Every field is an additive sum over calibration tokens, so disjoint
shards of windows merge exactly (`merge`, and the all-reduce under torchrun) — except FLAP's fluctuation,
which depends on the order of the windows: its terms fold shard after shard, exactly (`fold_fluctuation`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from neuronrank.errors import UserError

FORMAT_VERSION = 1
DEFAULT_TOPK = 16

# The activation a neuron's statistics are of (TransformerLens names in brackets); every entry records its site.
SITES = {
    "gate": "act_fn(blocks.{L}.mlp.hook_pre) = act_fn(gate_proj(x))",
    "product": "blocks.{L}.mlp.hook_post = act_fn(gate_proj(x)) * up_proj(x)",
}

# names of the per-layer sums over input features, [layers, in_features] each
INPUT_NORMS = ("mlp_in", "down_in", "attn_in", "o_in")


@dataclass
class NeuronStats:
    """Additive per-neuron sums over calibration tokens; arrays are [layers, neurons] unless noted."""

    site: str
    sum_abs: np.ndarray
    sum_act: np.ndarray
    sum_sq: np.ndarray
    n_active: np.ndarray
    tokens: np.ndarray  # [layers] T seen by each layer
    w_norm: np.ndarray  # ‖gate_proj row i‖₂
    up_norm: np.ndarray  # ‖up_proj row i‖₂
    down_norm: np.ndarray  # ‖down_proj column i‖₂
    down_abs_mean: np.ndarray  # mean_r |down_proj[r, i]| (FLAP / wanda_sp neuron score with ‖x_i‖)
    input_sq: dict[str, np.ndarray]  # INPUT_NORMS -> [layers, in_features] Σx² per input feature
    top_vals: np.ndarray  # [layers, neurons, k] largest activations, descending
    top_window: np.ndarray  # [layers, neurons, k] calibration window of each (global index)
    top_pos: np.ndarray  # [layers, neurons, k] position inside that window
    windows: np.ndarray | None = None  # [n_windows, seqlen] token ids seen, in window order
    first_window: int = 0  # global index of windows[0] (shards cover disjoint ranges)
    meta: dict = field(default_factory=dict)
    # the down_proj input's Σx per neuron ({"down_in": [layers, neurons]}) and the terms of FLAP's
    # fluctuation (engine/hooks.py DownMoments: "a", "b" [layers, neurons], "d", "n" windows [layers]);
    # empty in cache entries written before they were collected
    input_sum: dict[str, np.ndarray] = field(default_factory=dict)
    fluct: dict[str, np.ndarray] = field(default_factory=dict)

    # --- derived ---------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return self.sum_abs.shape[0]

    @property
    def width(self) -> int:
        return self.sum_abs.shape[1]

    @property
    def tf(self) -> np.ndarray:
        return self.sum_abs / self.tokens[:, None]

    @property
    def idf(self) -> np.ndarray:
        t = self.tokens[:, None].astype(np.float64)
        return np.log((t + 1.0) / (self.n_active + 1.0)) + 1.0

    @property
    def mean(self) -> np.ndarray:
        return self.sum_act / self.tokens[:, None]

    @property
    def std(self) -> np.ndarray:
        var = self.sum_sq / self.tokens[:, None] - self.mean**2
        return np.sqrt(np.maximum(var, 0.0))

    @property
    def has_down_moments(self) -> bool:
        """Whether these statistics hold the down_proj input's mean and fluctuation (entries written
        before they were collected do not)."""
        return "down_in" in self.input_sum and {"a", "b", "d", "n"} <= set(self.fluct)

    def _need_down_moments(self) -> None:
        if not self.has_down_moments:
            raise UserError("these statistics predate the down_proj input moments (mean, fluctuation); "
                            "compute them again")

    def down_input_mean(self) -> np.ndarray:
        """[layers, neurons] mean over the calibration tokens of the down_proj input
        act_fn(gate_proj(x)) * up_proj(x), float64."""
        self._need_down_moments()
        return self.input_sum["down_in"] / self.tokens[:, None]

    def down_input_variance(self) -> np.ndarray:
        """[layers, neurons] the textbook unbiased variance of the down_proj input over all calibration
        tokens, float64."""
        self._need_down_moments()
        t = self.tokens[:, None].astype(np.float64)
        s1 = self.input_sum["down_in"]
        return np.maximum(self.input_sq["down_in"] - s1 * s1 / t, 0.0) / np.maximum(t - 1, 1)

    def flap_fluctuation(self) -> np.ndarray:
        """[layers, neurons] FLAP's fluctuation of the down_proj input (its BiasGPT estimator, in closed
        form: see engine/hooks.py DownMoments), float64. Not a variance: the first window's deviations
        never count and each window's are taken from the running mean."""
        self._need_down_moments()
        n = self.fluct["n"].astype(np.float64)
        if (n < 2).any():
            raise UserError("FLAP's fluctuation needs at least 2 calibration windows")
        return self.fluct["a"] / (n[:, None] - 1)

    def input_norm(self, name: str) -> np.ndarray:
        """Wanda's ‖X_k‖₂ per input feature, [layers, in_features]."""
        if name not in self.input_sq:
            raise UserError(f"the statistics have no input norms {name!r}")
        return np.sqrt(self.input_sq[name])

    def to_frame(self):
        """The contract table: one row per neuron (layer-major), plus the raw sums."""
        import pandas as pd  # here, not at import: the statistics pass itself needs no pandas

        L, n = self.sum_abs.shape
        return pd.DataFrame({
            "layer": np.repeat(np.arange(L, dtype=np.int32), n),
            "neuron": np.tile(np.arange(n, dtype=np.int32), L),
            "tf": self.tf.ravel(),
            "idf": self.idf.ravel(),
            "n_active": self.n_active.ravel(),
            "tokens": np.repeat(self.tokens, n),
            "w_norm": self.w_norm.ravel(),
            "up_norm": self.up_norm.ravel(),
            "down_norm": self.down_norm.ravel(),
            "down_abs_mean": self.down_abs_mean.ravel(),
            "act_mean": self.mean.ravel(),
            "act_std": self.std.ravel(),
            "x_norm_down": self.input_norm("down_in").ravel(),
            "sum_abs": self.sum_abs.ravel(),
            "sum_act": self.sum_act.ravel(),
            "sum_sq": self.sum_sq.ravel(),
        })


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], k: int):
    """Top-k entries of several shards -> the top-k of all of them.

    `parts` are (values, window, position) triples of [layers, neurons, k] arrays in ascending window
    order: a stable sort then keeps the earliest window first among ties, as one pass would.
    """
    vals = np.concatenate([p[0] for p in parts], axis=2)
    order = np.argsort(-vals, axis=2, kind="stable")[:, :, :k]
    take = lambda i: np.take_along_axis(np.concatenate([p[i] for p in parts], axis=2), order, axis=2)  # noqa: E731
    return take(0), take(1), take(2)


def fold_fluctuation(parts: list[tuple[dict, np.ndarray]]) -> dict:
    """FLAP's fluctuation terms of consecutive shards, in window order, each with its Σx ([layers,
    neurons]) -> the terms of all of them: a later shard's a + b·C0 + d·C0² is re-expressed around the
    earlier shards' start (engine/hooks.py DownMoments)."""
    out, before = None, None
    for terms, s1 in parts:
        if out is None:
            out, before = {k: np.array(v, copy=True) for k, v in terms.items()}, np.array(s1, copy=True)
            continue
        d = terms["d"][:, None]
        out["a"] = out["a"] + terms["a"] + terms["b"] * before + d * before * before
        out["b"] = out["b"] + terms["b"] + 2 * d * before
        out["d"] = out["d"] + terms["d"]
        out["n"] = out["n"] + terms["n"]
        before = before + s1
    return out


def merge(a: NeuronStats, b: NeuronStats) -> NeuronStats:
    """Stats of two disjoint shards of windows -> the stats of both (exactly what one pass gives)."""
    if a.site != b.site or a.sum_abs.shape != b.sum_abs.shape:
        raise UserError("cannot merge statistics of different sites or model shapes")
    if b.first_window < a.first_window:
        a, b = b, a
    top_vals, top_window, top_pos = merge_topk(
        [(a.top_vals, a.top_window, a.top_pos), (b.top_vals, b.top_window, b.top_pos)], a.top_vals.shape[2])
    windows = None
    if a.windows is not None and b.windows is not None:
        windows = np.concatenate([a.windows, b.windows])
    moments = a.has_down_moments and b.has_down_moments
    return replace(
        a,
        sum_abs=a.sum_abs + b.sum_abs, sum_act=a.sum_act + b.sum_act, sum_sq=a.sum_sq + b.sum_sq,
        n_active=a.n_active + b.n_active, tokens=a.tokens + b.tokens,
        input_sq={k: a.input_sq[k] + b.input_sq[k] for k in a.input_sq},
        input_sum={k: a.input_sum[k] + b.input_sum[k] for k in a.input_sum if k in b.input_sum} if moments else {},
        fluct=fold_fluctuation([(a.fluct, a.input_sum["down_in"]), (b.fluct, b.input_sum["down_in"])])
        if moments else {},
        top_vals=top_vals, top_window=top_window, top_pos=top_pos, windows=windows,
        first_window=a.first_window, meta=dict(a.meta),
    )
