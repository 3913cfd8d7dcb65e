"""Run parameters: one typed request per job kind, the single home of every default, bound, choice
and help text. Imports no torch.

The CLI builds its flags from these fields (`add_arguments`), the app's pages take their defaults,
bounds and choices from them (`spec`), the run store persists `kind + asdict(request)` and a worker
rebuilds the request with `REQUESTS[kind](**params)` and validates it once. Pruning reads the
`PruneRequest` itself: there is no parallel spec object.

Adding a prune parameter: a field on `PruneRequest` (default, flags, bounds, help), its check in
`validate()` if the generic bounds do not say enough, and its use where it acts (pruning.py or
pipeline.py); the CLI flag, the stored run and the page's widget defaults follow from the field.
"""

from __future__ import annotations

import argparse
import builtins
import itertools
import math
import re
import uuid
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from neuronrank.errors import UserError
from neuronrank.scoring import check_exponent

DEFAULT_MODEL = "smollm2-135m"
CALIB_DEFAULT = "news"
EVAL_DEFAULT = "wiki"
TEXT_SOURCES = ("news", "wiki", "wikitext2", "c4")  # plus file:PATH
MAX_SEQLEN = 4096  # never size anything by max_position_embeddings (Llama-3 says 131072)
MAX_SEED = 2**31 - 1
DTYPES = ("auto", "fp32", "float32", "bf16", "bfloat16", "fp16", "float16")

# Activation sites (TransformerLens names in brackets).
SITES = {
    "gate": "act_fn(blocks.{L}.mlp.hook_pre) = act_fn(gate_proj(x))",
    "product": "blocks.{L}.mlp.hook_post = act_fn(gate_proj(x)) * up_proj(x)",
}


@dataclass(frozen=True)
class MethodInfo:
    """What the orchestration needs to know of a pruning method (its metric lives in pruning.py)."""

    needs_stats: bool
    mlp_only: bool = False
    uses_exponents: bool = False
    summary: str = ""
    group: str = "matrix"  # the method's own unstructured comparison group (its paper's / upstream's)
    always_sequential: bool = False  # calibrates layer by layer whatever --calibration says


METHODS: dict[str, MethodInfo] = {
    "neuronrank_old": MethodInfo(True, mlp_only=True, uses_exponents=True,
                                 summary="NeuronRank-OLD: |W_jk| × score_i, score = |W|^α × TF^β × IDF^γ"),
    "magnitude": MethodInfo(False, summary="Magnitude: |W_jk|"),
    "wanda": MethodInfo(True, summary="Wanda: |W_jk| × ‖X_k‖₂", group="row"),
    "random": MethodInfo(False, summary="Random: seeded uniform noise (the control)"),
    "sparsegpt": MethodInfo(True, always_sequential=True, group="matrix",
                            summary="SparseGPT: OBS reconstruction of the kept weights, layer by layer"),
}
CALIBRATIONS = ("one-pass", "sequential")


def locked_calibration(method: str, sparsity_type: str) -> tuple[str, str] | None:
    """(the calibration order, why) where a method / sparsity type fixes it; None where --calibration
    chooses."""
    info = METHODS[method]
    if not info.needs_stats:
        return "none", f"{method} uses no calibration statistics"
    if info.always_sequential:
        return "sequential", f"{method} always calibrates layer by layer"
    if sparsity_type == "structured":
        return "one-pass", "structured pruning ranks neurons from one-pass statistics"
    return None


def mlp_only(method: str, sparsity_type: str) -> bool:
    """Only the MLP linears can be pruned: NeuronRank scores and structured pruning address MLP neurons."""
    return METHODS[method].mlp_only or sparsity_type == "structured"
SPARSITY_TYPES = ("unstructured", "structured", "2:4", "4:8")
GROUPS = ("matrix", "row")
SCOPES = ("layer", "global")
TARGETS = ("mlp", "all")
EXPONENT_LABELS = {"alpha": "α (|W|)", "beta": "β (TF)", "gamma": "γ (IDF)"}


# what a path-valued field holds (paths.confine_params confines each kind): a model spec (a local path
# when it looks like one, else a hub id or the alias), a text source (a path after file:), a folder, a
# study storage URL (a file for SQLite)
PATH_KINDS = ("model", "source", "dir", "storage")


def param(default: Any, *flags: str, help: str = "", lo=None, hi=None, choices=None, type=None,
          label: str | None = None, noun: str | None = None, path: str | None = None):
    """A request field: its default and what the CLI, the app and validate() need to know of it.
    `flags` empty: not a command-line flag; `noun` names the field in messages ("unknown <noun> ...");
    `path`: the field names something on disk (one of PATH_KINDS) and a queued run confines it."""
    if path is not None and path not in PATH_KINDS:
        raise ValueError(f"unknown path kind {path!r}")
    meta = dict(flags=flags, help=help, lo=lo, hi=hi, choices=choices, label=label, noun=noun, path=path,
                type=type or (builtins.type(default) if isinstance(default, (int, float)) else str))
    return field(default=default, metadata=meta)


def path_fields(cls) -> dict[str, str]:
    """{field name: path kind} of every path-valued field of a request class: the one list a queued
    run's confinement walks (jobs.submit), so a new path field is confined by declaring it."""
    return {f.name: f.metadata["path"] for f in fields(cls) if f.metadata and f.metadata.get("path")}


def parse_floats(text: str | list | tuple) -> tuple[float, ...]:
    """Comma- (or semicolon-) separated numbers -> sorted distinct floats: the one list parser."""
    if isinstance(text, (list, tuple)):
        items = list(text)
    else:
        items = [v for v in str(text).replace(";", ",").split(",") if v.strip()]
    try:
        return tuple(sorted({round(float(v), 6) for v in items}))
    except (TypeError, ValueError) as e:
        raise UserError(f"expected comma-separated numbers, got {text!r}") from e


def _check_bounds(req) -> None:
    """The generic checks every field declares: type, lower and upper bound, choices."""
    for f in fields(req):
        m, v = f.metadata, getattr(req, f.name)
        if not m or v is None:
            continue
        if m["choices"] and v not in m["choices"]:
            raise UserError(f"unknown {m['noun'] or f.name} {v!r}; choose one of {', '.join(map(str, m['choices']))}")
        lo, hi = m["lo"], m["hi"]
        if lo is None and hi is None:
            continue
        try:
            num = float(v)
        except (TypeError, ValueError) as e:
            raise UserError(f"{f.name} must be a number (got {v!r})") from e
        if m["type"] is int and (not math.isfinite(num) or num != int(num)):
            raise UserError(f"{f.name} must be a whole number (got {v!r})")
        if (lo is not None and not num >= lo) or (hi is not None and not num <= hi):
            if lo is not None and hi is not None:
                raise UserError(f"{f.name} must be between {lo} and {hi} (got {v})")
            if lo is not None:
                raise UserError(f"{f.name} must be at least {lo} (got {v})")
            raise UserError(f"{f.name} must be at most {hi} (got {v})")


# ----------------------------------------------------------------------------------------------
# the requests


@dataclass(frozen=True)
class StatsRequest:
    """Per-neuron statistics over calibration text (cached)."""

    model: str = param(DEFAULT_MODEL, "--model", help="HF id, local dir, .gguf, or smollm2-135m", label="Model",
                       path="model")
    calib: str = param(CALIB_DEFAULT, "--calib", help="news | wiki | wikitext2 | c4 | file:PATH",
                       label="Calibration text", path="source")
    nsamples: int = param(64, "--nsamples", lo=1, help="calibration windows", label="nsamples")
    seqlen: int = param(256, "--seqlen", lo=2, hi=MAX_SEQLEN, help="tokens per calibration window",
                        label="seqlen")
    seed: int = param(0, "--seed", lo=0, hi=MAX_SEED, help="seed of the calibration window offsets", label="seed")
    site: str = param("gate", "--site", choices=tuple(SITES), noun="activation site",
                      help="gate: act_fn(gate_proj(x)) (original); product: act_fn(gate_proj(x))*up_proj(x)",
                      label="Activation site")
    skip_first: int = param(0, "--skip-first", "--skip_first", lo=0, hi=MAX_SEQLEN - 1,
                            help="ignore the first N positions of each calibration window in the statistics "
                                 "(attention-sink neurons fire there; 0 = the original)",
                            label="Skip first N positions")
    dtype: str = param("auto", "--dtype", help="auto (bf16 on cuda, fp32 on cpu) | fp32 | bf16 | fp16")
    device: str = param("auto", "--device", help="auto | cpu | cuda | cuda:N")
    batch_size: int = param(8, "--batch-size", lo=1, help="calibration windows per forward pass")
    topk: int = param(16, "--topk", lo=1, hi=256, help="top activations kept per neuron")

    def validate(self) -> None:
        _check_bounds(self)
        _check_dtype(self.dtype)
        _check_source_name(self.calib)
        _check_skip(self.skip_first, self.seqlen)


@dataclass(frozen=True)
class EvalFields:
    """The evaluation protocol shared by prune and ppl runs."""

    eval: str = param(EVAL_DEFAULT, "--eval", help="wiki | news | wikitext2 | c4 | file:PATH",
                      label="Evaluation text", path="source")
    eval_seqlen: int = param(512, "--eval-seqlen", "--eval_seqlen", lo=2,
                             help="tokens per evaluation window", label="Eval seqlen")
    eval_windows: int | None = param(None, "--eval-windows", "--eval_windows", lo=0, type=int,
                                     help="cap on evaluation windows (default 16 on CPU, all on GPU; 0 = all)",
                                     label="Eval windows (0 = all)")

    def eval_window_cap(self, on_gpu: bool) -> int | None:
        """None = all windows. The default keeps a CPU run near a minute."""
        if self.eval_windows is None:
            return None if on_gpu else 16
        return None if int(self.eval_windows) == 0 else int(self.eval_windows)


@dataclass(frozen=True)
class PplRequest(EvalFields):
    """Perplexity of a model (Wanda protocol)."""

    model: str = param(DEFAULT_MODEL, "--model", help="HF id, local dir, .gguf, or smollm2-135m", path="model")
    dtype: str = param("auto", "--dtype", help="auto | fp32 | bf16 | fp16")
    device: str = param("auto", "--device", help="auto | cpu | cuda | cuda:N")

    def validate(self) -> None:
        _check_bounds(self)
        _check_dtype(self.dtype)
        _check_source_name(self.eval)


@dataclass(frozen=True)
class PruneRequest(EvalFields):
    """A prune + perplexity run. Field names follow the original's (Wanda-style) flags."""

    model: str = param(DEFAULT_MODEL, "--model", help="HF id, local dir, .gguf, or smollm2-135m", path="model")
    prune_method: str = param("neuronrank_old", "--prune_method", "--prune-method", choices=tuple(METHODS),
                              help="neuronrank_old or a baseline", label="Method", noun="pruning method")
    sparsity_ratio: float = param(0.5, "--sparsity_ratio", "--sparsity-ratio", label="Sparsity ratio",
                                  help="fraction of each comparison group to prune, in [0, 1)")
    sparsity_type: str = param("unstructured", "--sparsity_type", "--sparsity-type", choices=SPARSITY_TYPES,
                               label="Sparsity type", noun="sparsity type",
                               help="unstructured: lowest metric per matrix; structured: whole neurons per "
                                    "layer; 2:4 / 4:8: N of every M weights")
    pruning_last: int | None = param(None, "--pruning_last", "--pruning-last", lo=1, type=int,
                                     help="prune only the last N decoder layers",
                                     label="Prune only the last N layers (0 = all)")
    # the exponents of score = |W|^α × TF^β × IDF^γ; None (not recorded) for methods that ignore them
    alpha: float | None = param(1.0, "--weight-exp", "--weight_exp", help="alpha: exponent of |W|", label="α (|W|)")
    beta: float | None = param(1.0, "--tf-exp", "--tf_exp", help="beta: exponent of TF", label="β (TF)")
    gamma: float | None = param(1.0, "--idf-exp", "--idf_exp", help="gamma: exponent of IDF", label="γ (IDF)")
    # None = the method's own group (MethodInfo.group): wanda per output row as upstream Wanda,
    # magnitude per matrix as Wanda's prune_magnitude, neuronrank_old per matrix as the original
    group: str | None = param(None, "--group", choices=GROUPS, noun="comparison group", type=str,
                              help="unstructured comparison group: matrix (one threshold per matrix) or row "
                                   "(per output row); default: the method's own (wanda: row; magnitude, "
                                   "neuronrank_old, random: matrix)")
    scope: str = param("layer", "--structured-scope", choices=SCOPES, noun="structured scope",
                       help="structured: one threshold per layer or one across the pruned layers")
    targets: str = param("mlp", "--targets", choices=TARGETS,
                         help="mlp (default) or all: adds attention projections (magnitude/wanda/random)")
    # calibration (the statistics a method needs)
    calibration: str | None = param("one-pass", "--calibration", choices=CALIBRATIONS, type=str,
                                    noun="calibration order",
                                    help="one-pass: statistics once on the dense model (fast); sequential: "
                                         "layer by layer from the outputs of the already pruned layers "
                                         "(upstream Wanda/SparseGPT; sparsegpt always)",
                                    label="Calibration order")
    calib: str = param(CALIB_DEFAULT, "--calib", help="news | wiki | wikitext2 | c4 | file:PATH", path="source")
    nsamples: int = param(64, "--nsamples", lo=1, help="calibration windows")
    seqlen: int = param(256, "--seqlen", lo=2, hi=MAX_SEQLEN, help="tokens per calibration window")
    seed: int = param(0, "--seed", lo=0, hi=MAX_SEED, help="calibration offsets and the random baseline")
    site: str = param("gate", "--site", choices=tuple(SITES), noun="activation site",
                      help="activation site of the statistics")
    skip_first: int = param(0, "--skip-first", "--skip_first", lo=0, hi=MAX_SEQLEN - 1,
                            help="ignore the first N positions of each calibration window in the statistics")
    dtype: str = param("auto", "--dtype", help="auto | fp32 | bf16 | fp16")
    device: str = param("auto", "--device", help="auto | cpu | cuda | cuda:N")
    # zero-shot accuracy (lm-eval) beside perplexity
    eval_tasks: str | None = param(None, "--eval-tasks", "--eval_tasks", type=str,
                                   help="comma-separated lm-eval tasks run on the pruned model (wanda = boolq,"
                                        "rte,hellaswag,winogrande,arc_easy,arc_challenge,openbookqa)")
    eval_tasks_path: str | None = param(None, "--eval-tasks-path", "--eval_tasks_path", type=str,
                                        help="folder of extra lm-eval task YAMLs (a local task; its YAMLs "
                                             "are code: !function imports the .py files beside them)",
                                        path="dir")
    # outputs
    save: str | None = param(None, "--save", type=str, help="folder for result.json and sparsity.csv", path="dir")
    save_model: str | None = param(None, "--save_model", "--save-model", type=str,
                                   help="folder for the pruned model", path="dir")

    @property
    def method(self) -> MethodInfo:
        return METHODS[self.prune_method]

    @property
    def sequential(self) -> bool:
        """Layer-by-layer calibration (only methods that calibrate have any)."""
        return self.method.needs_stats and (self.method.always_sequential or self.calibration == "sequential")

    @property
    def comparison_group(self) -> str:
        """The unstructured comparison group actually used: --group, else the method's own."""
        return self.group if self.group is not None else self.method.group

    def validate(self, n_layers: int | None = None) -> None:
        _check_bounds(self)
        _check_dtype(self.dtype)
        r = self.sparsity_ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or not 0.0 <= r < 1.0:
            raise UserError(f"sparsity_ratio must be in [0, 1) (got {r!r})")
        if ":" in self.sparsity_type:
            n, m = nm(self.sparsity_type)
            if abs(r - n / m) > 1e-9:
                raise UserError(f"{self.sparsity_type} sparsity prunes {n} of every {m} weights: "
                                f"sparsity_ratio must be {n / m:g} (got {r:g})")
        if self.sequential and self.sparsity_type == "structured":
            raise UserError(f"{self.prune_method} with sequential calibration prunes unstructured or N:M "
                            "sparsity only (structured pruning ranks neurons from one-pass statistics)")
        if self.targets == "all" and mlp_only(self.prune_method, self.sparsity_type):
            raise UserError(f"--targets all is not defined for {self.prune_method} / {self.sparsity_type}: "
                            "NeuronRank scores and structured pruning address MLP neurons only")
        if n_layers is not None:
            self.check_layers(n_layers)
        if self.method.uses_exponents:
            for name in EXPONENT_LABELS:
                check_exponent(name, getattr(self, name))
        _check_source_name(self.calib)
        _check_source_name(self.eval)
        _check_skip(self.skip_first, self.seqlen)

    def normalized(self) -> "PruneRequest":
        """What a run records: the exponents only for a method that uses them (None otherwise), so a
        baseline's run never shows exponents it ignored; the comparison group resolved to the one used."""
        # the group and calibration order it ran with, not "default"
        calibration = None if not self.method.needs_stats else ("sequential" if self.sequential else "one-pass")
        req = replace(self, group=self.comparison_group, calibration=calibration)
        if req.method.uses_exponents:
            return req
        return replace(req, alpha=None, beta=None, gamma=None)

    def check_layers(self, n_layers: int) -> None:
        if self.pruning_last is not None and int(self.pruning_last) > n_layers:
            raise UserError(f"pruning_last {self.pruning_last} exceeds the model's {n_layers} layers")

    def pruned_layers(self, n_layers: int) -> list[int]:
        last = self.pruning_last
        return list(range(n_layers - int(last), n_layers)) if last else list(range(n_layers))

    def stats_request(self) -> StatsRequest:
        """The statistics this run's method is computed from (shared with the cache)."""
        return StatsRequest(model=self.model, calib=self.calib, nsamples=self.nsamples, seqlen=self.seqlen,
                            seed=self.seed, site=self.site, dtype=self.dtype, device=self.device,
                            skip_first=self.skip_first)


@dataclass(frozen=True)
class SweepRequest(PruneRequest):
    """A grid of prune runs over sparsity ratios and exponents, every other setting fixed."""

    ratios: tuple = param((0.5,), "--ratios", type=parse_floats, help="comma-separated sparsity ratios")
    alphas: tuple = param((1.0,), "--alphas", type=parse_floats, help="comma-separated |W| exponents")
    betas: tuple = param((1.0,), "--betas", type=parse_floats, help="comma-separated TF exponents")
    gammas: tuple = param((1.0,), "--gammas", type=parse_floats, help="comma-separated IDF exponents")

    MAX_RUNS = 100

    def grid(self) -> list[PruneRequest]:
        base = {f.name: getattr(self, f.name) for f in fields(PruneRequest)}
        out = [PruneRequest(**{**base, "sparsity_ratio": r, "alpha": a, "beta": b, "gamma": g})
               for r, a, b, g in itertools.product(self.ratios, self.alphas, self.betas, self.gammas)]
        return out

    def validate(self) -> None:
        runs = self.grid()
        if not runs:
            raise UserError("the sweep grid is empty")
        if len(runs) > self.MAX_RUNS:
            raise UserError(f"a sweep of {len(runs)} runs is too large (at most {self.MAX_RUNS})")
        for r in runs:
            r.validate()


# Protocols: one switch for every choice of a published setup (the CLI's --protocol); seqlen is the
# model's context, capped at MAX_SEQLEN, for calibration and evaluation alike (upstream's model.seqlen).
PROTOCOLS: dict[str, dict] = {
    "wanda": dict(targets="all", group="row", nsamples=128, calib="c4", calibration="sequential",
                  eval="wikitext2", eval_windows=0),
}


def with_protocol(req: PruneRequest, name: str, context: int | None) -> PruneRequest:
    """`req` with every setting of protocol `name` (the seqlens from the model's `context`)."""
    if name not in PROTOCOLS:
        raise UserError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    seqlen = min(int(context), MAX_SEQLEN) if context else MAX_SEQLEN
    return replace(req, **PROTOCOLS[name], seqlen=seqlen, eval_seqlen=seqlen)


def protocol_settings(req: PruneRequest, name: str) -> str:
    """The settings a protocol made, as one line to print."""
    keys = list(PROTOCOLS[name]) + ["seqlen", "eval_seqlen"]
    return f"protocol {name}: " + ", ".join(f"{k}={getattr(req, k)}" for k in keys)


# CLI-only flags of a command that are not part of the request (not stored with the run)
SWEEP_ONLY = ("ratios", "alphas", "betas", "gammas")
SWEPT = ("sparsity_ratio", "alpha", "beta", "gamma")


def sweep_axes(base: PruneRequest, x: str, xs, y: str, ys) -> SweepRequest:
    """A sweep of two exponents (the app's landscape): everything else from `base`."""
    if x == y or x not in EXPONENT_LABELS or y not in EXPONENT_LABELS:
        raise UserError("a sweep needs two different exponents out of alpha, beta, gamma")
    xs, ys = parse_floats(xs), parse_floats(ys)
    if not xs or not ys:
        raise UserError("a sweep needs at least one value per axis")
    axes = {"alphas": (base.alpha,), "betas": (base.beta,), "gammas": (base.gamma,)}
    axes[x + "s"], axes[y + "s"] = xs, ys
    return SweepRequest(**asdict(base), ratios=(base.sparsity_ratio,), **axes)


def new_sweep_group() -> str:
    """The run-store group id of one sweep (its runs share it)."""
    return f"sweep-{uuid.uuid4().hex[:8]}"


class RangeError(UserError, argparse.ArgumentTypeError):
    """A malformed LO,HI (argparse shows an ArgumentTypeError's own message)."""


def parse_range(text: str | list | tuple) -> tuple[float, float]:
    """"LO,HI" (or a pair) -> (lo, hi) as given: a reversed range is an error, not silently swapped."""
    items = list(text) if isinstance(text, (list, tuple)) else [v for v in str(text).split(",")]
    try:
        pair = tuple(float(v) for v in items)
    except (TypeError, ValueError) as e:
        raise RangeError(f"a range is two numbers LO,HI (got {text!r})") from e
    if len(pair) != 2:
        raise RangeError(f"a range is two numbers LO,HI (got {text!r})")
    return pair


STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")
# a study's protocol: every field but these (how many trials, who runs them, where they are stored)
SEARCH_RUNTIME = ("trials", "workers", "storage", "study", "device", "save", "save_model",
                  "alpha", "beta", "gamma")


@dataclass(frozen=True)
class SearchRequest(PruneRequest):
    """An Optuna study over the NeuronRank-OLD exponents: TPE proposes (α, β, γ), each trial prunes and
    evaluates under the prune protocol, successive halving stops bad trials after a prefix of the
    evaluation windows. Every prune / calibration / evaluation field is PruneRequest's."""

    trials: int = param(20, "--trials", lo=1, hi=10_000, help="finished trials the study aims for (all workers)",
                        label="Trials")
    alpha_range: tuple = param((0.0, 3.0), "--alpha-range", "--alpha_range", type=parse_range,
                               help="LO,HI of α (|W| exponent); LO = HI fixes it", label="α range")
    beta_range: tuple = param((0.0, 3.0), "--beta-range", "--beta_range", type=parse_range,
                              help="LO,HI of β (TF exponent)", label="β range")
    gamma_range: tuple = param((0.0, 3.0), "--gamma-range", "--gamma_range", type=parse_range,
                               help="LO,HI of γ (IDF exponent)", label="γ range")
    storage: str | None = param(None, "--storage", type=str,
                                help="SQLAlchemy URL of the study storage (default: SQLite in the cache); "
                                     "workers on other machines join through a shared URL (e.g. postgresql://)",
                                path="storage")
    study: str | None = param(None, "--study", type=str,
                              help="study name (default: derived from the protocol; an existing study is resumed)")
    workers: int = param(1, "--workers", lo=1, hi=64, help="trials at once on this machine, one per device "
                                                           "(each worker sees one GPU); CPU default 1")
    rungs: int = param(3, "--rungs", lo=1, hi=8,
                       help="successive-halving rungs: ppl is reported after W/2^(r-1), ..., W/2, W evaluation "
                            "windows and the worse half at each rung stops (1 = no early stopping)",
                       label="Halving rungs")

    def range(self, name: str) -> tuple[float, float]:
        return parse_range(getattr(self, f"{name}_range"))

    def validate(self) -> None:
        if self.prune_method != "neuronrank_old":
            raise UserError(f"search tunes the NeuronRank-OLD exponents: --prune_method must be neuronrank_old "
                            f"(got {self.prune_method}); the baselines are evaluated with every study")
        super().validate()
        if self.sparsity_ratio == 0:
            raise UserError("a search at sparsity_ratio 0 prunes nothing (every trial would be the dense model): "
                            "choose a ratio above 0")
        for name in EXPONENT_LABELS:
            lo, hi = self.range(name)
            for v in (lo, hi):
                check_exponent(f"{name} range", v)
            if lo > hi:
                raise UserError(f"{name} range {lo:g},{hi:g} is reversed: write LO,HI with LO <= HI")
        if self.study is not None and not STUDY_NAME.fullmatch(str(self.study)):
            raise UserError(f"study name {self.study!r}: use 1-100 letters, digits, '.', '_', ':' or '-'")
        if self.storage is not None:
            check_storage_url(self.storage)

    def protocol(self) -> dict:
        """The fields that define what a trial's number means (a joined study must agree on them)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in SEARCH_RUNTIME}
        for name in EXPONENT_LABELS:
            out[f"{name}_range"] = list(self.range(name))
        return out

    def prune_request(self, alpha: float, beta: float, gamma: float, **over) -> PruneRequest:
        base = {f.name: getattr(self, f.name) for f in fields(PruneRequest)}
        return PruneRequest(**{**base, "alpha": alpha, "beta": beta, "gamma": gamma, "save": None,
                               "save_model": None, **over})


def check_storage_url(url: str) -> None:
    """A storage URL SQLAlchemy can parse, with a known backend (whether it answers is checked when the
    study opens)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    text = str(url).strip()
    try:
        parsed = make_url(text)
    except (ArgumentError, ValueError) as e:
        raise UserError(f"storage {text!r} is not a SQLAlchemy URL (e.g. sqlite:///path/studies.db or "
                        "postgresql://user@host/db)") from e
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql"):
        raise UserError(f"storage {text!r}: unknown database {backend!r}; use sqlite, postgresql or mysql")
    if backend == "sqlite" and not parsed.database:
        raise UserError("an SQLite storage needs a file (sqlite:///path/studies.db); in-memory studies "
                        "cannot be shared with workers")


REQUESTS: dict[str, type] = {"stats": StatsRequest, "prune": PruneRequest, "ppl": PplRequest,
                             "search": SearchRequest}


def from_params(kind: str, params: dict):
    """A stored run's parameters -> its request (unknown keys refused: they would be ignored silently)."""
    if kind not in REQUESTS:
        raise UserError(f"unknown run kind {kind!r}")
    cls = REQUESTS[kind]
    names = {f.name for f in fields(cls)}
    extra = set(params) - names
    if extra:
        raise UserError(f"unknown {kind} parameter(s): {', '.join(sorted(extra))}")
    return cls(**params)


# ----------------------------------------------------------------------------------------------
# checks beyond one field


def nm(sparsity_type: str) -> tuple[int, int]:
    n, m = sparsity_type.split(":")
    return int(n), int(m)


def _check_skip(skip_first, seqlen) -> None:
    if int(skip_first) >= int(seqlen):
        raise UserError(f"skip_first ({skip_first}) must be less than seqlen ({seqlen})")


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; choose auto, fp32, bf16 or fp16")


def _check_source_name(source: str) -> None:
    """A text source is a known name or file:PATH (whether the file exists is check_inputs' part)."""
    s = str(source).strip()
    if s.startswith("file:"):
        if not s[len("file:"):].strip():
            raise UserError("enter the path of the text file after file:")
        return
    if s not in TEXT_SOURCES:
        raise UserError(f"unknown text source {s!r}; choose one of {', '.join(TEXT_SOURCES)} or file:PATH")


def check_inputs(req) -> None:
    """What exists on disk, checked before anything is queued or loaded: the model spec resolves,
    every file: text source is a file, every output target is writable. (No model is loaded.)"""
    from neuronrank.specs import resolve

    if hasattr(req, "model"):
        resolve(req.model)
    from neuronrank.paths import check_model_folder, check_output_folder

    for name in ("calib", "eval"):
        source = str(getattr(req, name, "") or "").strip()
        if source.startswith("file:"):
            path = Path(source[len("file:"):].strip()).expanduser()
            if not path.is_file():
                raise UserError(f"text file not found: {path}")
    if getattr(req, "eval_tasks_path", None):
        from neuronrank.zeroshot import check_task_folder

        check_task_folder(req.eval_tasks_path)
    # output targets, before any model loads: a typo must not cost the run
    if getattr(req, "save", None):
        check_output_folder(req.save, "--save")
    if getattr(req, "save_model", None):
        check_model_folder(Path(req.save_model), "--save_model")


# ----------------------------------------------------------------------------------------------
# the command line and the pages read the fields


@dataclass(frozen=True)
class FieldSpec:
    name: str
    default: Any
    flags: tuple
    help: str
    lo: Any
    hi: Any
    choices: tuple | None
    label: str


def spec(cls, name: str) -> FieldSpec:
    """Default, bounds, choices, help and label of one field (the pages' widgets use these)."""
    f = next((f for f in fields(cls) if f.name == name), None)
    if f is None:
        raise KeyError(f"{cls.__name__} has no field {name!r}")
    m = f.metadata
    default = f.default if f.default is not MISSING else None
    return FieldSpec(name, default, m["flags"], m["help"], m["lo"], m["hi"], m["choices"], m["label"] or name)


def add_arguments(parser: argparse.ArgumentParser, cls, skip: tuple = ()) -> None:
    """One argparse flag per field of `cls` that has flags, dest = the field name, default = its default."""
    for f in fields(cls):
        m = f.metadata
        if not m or not m["flags"] or f.name in skip:
            continue
        kwargs = dict(dest=f.name, default=f.default, help=m["help"] or None)
        if m["choices"]:
            kwargs["choices"] = list(m["choices"])
        t = m["type"]
        if t is not str:
            kwargs["type"] = t
        parser.add_argument(*m["flags"], **kwargs)


def from_args(cls, args: argparse.Namespace, **over):
    """A request from parsed arguments (fields without a flag keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    values.update(over)
    return cls(**values)

