"""Run parameters: one typed request per job kind, the single home of every default, bound, choice
and help text. Imports no torch.

The CLI builds its flags from these fields (`fields.add_arguments`), the app's pages take their defaults,
bounds, choices and labels from them (`fields.spec`), the run store persists `kind + asdict(request)` and a
worker rebuilds the request with `REQUESTS[kind](**params)` and validates it once. Pruning reads the
`PruneRequest` itself: there is no parallel spec object.

The fields a group of requests shares are declared once, in a mixin every such request inherits:
`ModelFields` (the model and how it is loaded), `CalibrationFields` (the statistics a run calibrates from:
stats, prune, sweep and search runs; the statistics cache is keyed by them) and `EvalFields` (the
perplexity protocol). Adding a calibration parameter: a field on `CalibrationFields` and its use where it
acts; the CLI flag of every command that calibrates, the stored run, the cache key and the page defaults
follow from the field. Adding a prune parameter: the same on `PruneRequest`.
"""

from __future__ import annotations

import itertools
import math
import re
import uuid
from dataclasses import asdict, dataclass, fields, replace

from neuronrank.analysis import ablation
from neuronrank.analysis.neuron_stats import DEFAULT_TOPK, SITES
from neuronrank.analysis.scoring import check_exponent
from neuronrank.config.fields import check_bounds, param, parse_floats, parse_range, spec
from neuronrank.config.methods import CALIBRATIONS, GROUPS, METHODS, SPARSITY_TYPES, STRUCTURED_ONE_PASS, TARGETS, \
    Method, nm
from neuronrank.errors import UserError

DEFAULT_MODEL = "smollm2-135m"
CALIB_DEFAULT = "news"
EVAL_DEFAULT = "wiki"
TEXT_SOURCES = ("news", "wiki", "wikitext2", "c4")  # plus file:PATH
MAX_SEQLEN = 4096  # never size anything by max_position_embeddings (Llama-3 says 131072)
MAX_SEED = 2**31 - 1
DTYPES = ("auto", "fp32", "float32", "bf16", "bfloat16", "fp16", "float16")
SCOPES = ("layer", "global")
LAYER_SPARSITIES = ("uniform", "owl")
OWL_THRESHOLD, OWL_LAMBDA = 5.0, 0.08  # OWL's M (its README and paper; its argparse says 3) and λ
COMPENSATIONS = ("none", "mean")
FLUCTUATIONS = ("flap", "variance")
EXPONENT_LABELS = {"alpha": "α (|W|)", "beta": "β (TF)", "gamma": "γ (IDF)"}


# ----------------------------------------------------------------------------------------------
# fields shared by several requests, declared once


@dataclass(frozen=True)
class ModelFields:
    """The model a run loads, and how."""

    model: str = param(DEFAULT_MODEL, "--model", help="HF id, local dir, .gguf, or smollm2-135m", label="Model",
                       path="model")
    dtype: str = param("auto", "--dtype", help="auto (bf16 on cuda, fp32 on cpu) | fp32 | bf16 | fp16")
    device: str = param("auto", "--device", help="auto | cpu | cuda | cuda:N")

    def check_model_fields(self) -> None:
        if self.dtype not in DTYPES:
            raise UserError(f"unknown dtype {self.dtype!r}; choose auto, fp32, bf16 or fp16", field="dtype")


@dataclass(frozen=True)
class CalibrationFields(ModelFields):
    """The statistics a run calibrates from (the statistics cache's key is made of these)."""

    calib: str = param(CALIB_DEFAULT, "--calib", help="news | wiki | wikitext2 | c4 | file:PATH",
                       label="Calibration text", path="source")
    nsamples: int = param(64, "--nsamples", lo=1, help="calibration windows", label="nsamples")
    seqlen: int = param(256, "--seqlen", lo=2, hi=MAX_SEQLEN, help="tokens per calibration window", label="seqlen")
    seed: int = param(0, "--seed", lo=0, hi=MAX_SEED, help="seed of the calibration window offsets (and of the "
                                                            "random baseline)", label="seed")
    site: str = param("gate", "--site", choices=tuple(SITES), noun="activation site",
                      help="gate: act_fn(gate_proj(x)) (original); product: act_fn(gate_proj(x))*up_proj(x)",
                      label="Activation site")
    skip_first: int = param(0, "--skip-first", "--skip_first", lo=0, hi=MAX_SEQLEN - 1,
                            help="ignore the first N positions of each calibration window in the statistics "
                                 "(attention-sink neurons fire there; 0 = the original)",
                            label="Skip first N positions")

    def check_calibration(self) -> None:
        check_source_name(self.calib, "calib")
        if int(self.skip_first) >= int(self.seqlen):
            raise UserError(f"skip_first ({self.skip_first}) must be less than seqlen ({self.seqlen})",
                            field="skip_first")

    def stats_request(self) -> StatsRequest:
        """The statistics this run is computed from (shared with the cache)."""
        return StatsRequest(**{f.name: getattr(self, f.name) for f in fields(CalibrationFields)})


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


# ----------------------------------------------------------------------------------------------
# the requests


@dataclass(frozen=True)
class StatsRequest(CalibrationFields):
    """Per-neuron statistics over calibration text (cached)."""

    batch_size: int = param(8, "--batch-size", lo=1, help="calibration windows per forward pass")
    topk: int = param(DEFAULT_TOPK, "--topk", lo=1, hi=256, help="top activations kept per neuron")

    def validate(self) -> None:
        check_bounds(self)
        self.check_model_fields()
        self.check_calibration()


@dataclass(frozen=True)
class PplRequest(EvalFields, ModelFields):
    """Perplexity of a model (Wanda protocol)."""

    def validate(self) -> None:
        check_bounds(self)
        self.check_model_fields()
        check_source_name(self.eval, "eval")


@dataclass(frozen=True)
class PruneRequest(EvalFields, CalibrationFields):
    """A prune + perplexity run. Field names follow the original's (Wanda-style) flags."""

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
    # None = the method's own group (Method.group): wanda per output row as upstream Wanda,
    # magnitude per matrix as Wanda's prune_magnitude, neuronrank_old per matrix as the original
    group: str | None = param(None, "--group", choices=GROUPS, noun="comparison group", type=str,
                              help="unstructured comparison group: matrix (one threshold per matrix) or row "
                                   "(per output row); default: the method's own (wanda: row; magnitude, "
                                   "neuronrank_old, random: matrix)", label="Comparison group")
    scope: str | None = param(None, "--structured-scope", choices=SCOPES, noun="structured scope", type=str,
                              help="structured: one threshold per layer or one across the pruned layers; "
                                   "default: the method's own (flap: global, as its AL-AM ranking; the others "
                                   "per layer)")
    targets: str = param("mlp", "--targets", choices=TARGETS, label="Pruned linears",
                         help="mlp (default) or all: adds attention projections (magnitude/wanda/random)")
    calibration: str | None = param(None, "--calibration", choices=CALIBRATIONS, type=str,
                                    noun="calibration order",
                                    help="one-pass: statistics once on the dense model (fast); sequential: "
                                         "layer by layer from the outputs of the already pruned layers "
                                         "(upstream Wanda/SparseGPT; sparsegpt always); default: the "
                                         "method's own (ria: sequential, as its code; the others one-pass)",
                                    label="Calibration order")
    # OWL: a sparsity per layer from the layer's outlier ratio (prune/layer_sparsity.py); its M and λ are
    # None unless given (OWL's own 5 and 0.08), so that giving them without OWL can be refused
    layer_sparsity: str = param("uniform", "--layer-sparsity", "--layer_sparsity", choices=LAYER_SPARSITIES,
                                noun="layer sparsity",
                                help="uniform: every layer at sparsity_ratio; owl: OWL's outlier-weighed ratios "
                                     "(mean sparsity_ratio; unstructured only)", label="Layer sparsity")
    owl_threshold: float | None = param(None, "--owl-threshold", "--owl_threshold", lo=0, hi=1000, type=float,
                                        help=f"OWL's M: an outlier is a metric entry above M × the layer's mean "
                                             f"(default {OWL_THRESHOLD:g})", label="OWL threshold M")
    owl_lambda: float | None = param(None, "--owl-lambda", "--owl_lambda", lo=0, hi=1, type=float,
                                     help=f"OWL's λ: layer sparsities spread over ±λ around sparsity_ratio "
                                          f"(default {OWL_LAMBDA:g})", label="OWL λ")
    # structured: add the pruned neurons' mean output back as a down_proj bias (FLAP's compensation)
    compensate: str | None = param(None, "--compensate", choices=COMPENSATIONS, type=str, noun="compensation",
                                   help="structured: mean adds W_down[:, pruned] · mean(x_pruned) to the down_proj "
                                        "bias; default: the method's own (flap: mean, the others none)",
                                   label="Bias compensation")
    fluctuation: str | None = param(None, "--fluctuation", choices=FLUCTUATIONS, type=str, noun="fluctuation",
                                    help="flap: flap (its own running estimator, the default) or variance (the "
                                         "textbook variance over all calibration tokens)")
    # zero-shot accuracy (lm-eval) beside perplexity
    eval_tasks: str | None = param(None, "--eval-tasks", "--eval_tasks", type=str,
                                   help="comma-separated lm-eval tasks run on the pruned model (wanda = boolq,"
                                        "rte,hellaswag,winogrande,arc_easy,arc_challenge,openbookqa)",
                                   label="Zero-shot tasks (lm-eval)")
    eval_tasks_path: str | None = param(None, "--eval-tasks-path", "--eval_tasks_path", type=str,
                                        help="folder of extra lm-eval task YAMLs (a local task; its YAMLs "
                                             "are code: !function imports the .py files beside them)",
                                        label="Folder of extra lm-eval task YAMLs", path="dir")
    # outputs
    save: str | None = param(None, "--save", type=str, help="folder for result.json and sparsity.csv",
                             path="dir")
    save_model: str | None = param(None, "--save_model", "--save-model", type=str,
                                   help="folder for the pruned model", path="dir")
    save_masks: str | None = param(None, "--save-masks", "--save_masks", type=str,
                                   help="file for the pruning masks (packed bits, safetensors, one tensor per "
                                        "pruned linear) to re-apply while fine-tuning", path="file")

    @property
    def method(self) -> Method:
        return METHODS[self.prune_method]

    @property
    def sequential(self) -> bool:
        """Layer-by-layer calibration (only methods that calibrate have any): the order a method always
        uses, else --calibration, else the method's own default."""
        m = self.method
        if not m.needs_stats:
            return False
        if m.calibration is not None:
            return m.calibration == "sequential"
        if self.sparsity_type == "structured" and self.calibration is None:
            return False  # structured pruning ranks neurons from one-pass statistics
        return (self.calibration or m.default_calibration) == "sequential"

    @property
    def comparison_group(self) -> str:
        """The unstructured comparison group actually used: --group, else the method's own."""
        return self.group if self.group is not None else self.method.group

    @property
    def structured_scope(self) -> str:
        """The structured scope actually used: --structured-scope, else the method's own."""
        return self.scope if self.scope is not None else self.method.scope

    @property
    def compensation(self) -> str:
        """The bias compensation actually used (structured only): --compensate, else the method's own."""
        if self.sparsity_type != "structured":
            return "none"
        return self.compensate if self.compensate is not None else self.method.compensate

    @property
    def owl(self) -> bool:
        return self.layer_sparsity == "owl"

    @property
    def owl_m(self) -> float:
        return float(self.owl_threshold) if self.owl_threshold is not None else OWL_THRESHOLD

    @property
    def owl_lam(self) -> float:
        return float(self.owl_lambda) if self.owl_lambda is not None else OWL_LAMBDA

    @property
    def tie_rule(self) -> str:
        """The mask rule (prune/masks.py): the method's own; with OWL its originals' (int() per row, `<=`
        per matrix), which its layer ratios are defined with."""
        return "upstream" if self.owl else self.method.tie_rule

    @property
    def needs_statistics(self) -> bool:
        """Whether the run needs one-pass statistics of the dense model: a method calibrated in one pass,
        OWL's outlier ratios (always from the dense model, also when the pruning is sequential) and the
        means of mean compensation."""
        m = self.method
        return (m.needs_stats and not self.sequential) or self.owl or self.compensation == "mean"

    @property
    def needs_down_moments(self) -> bool:
        """The statistics must hold the down_proj input's mean / fluctuation (entries from before they
        were collected are computed again)."""
        return self.method.needs_moments or self.compensation == "mean"

    def validate(self, n_layers: int | None = None) -> None:
        check_bounds(self)
        self.check_model_fields()
        r, stype = self.sparsity_ratio, self.sparsity_type
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or not 0.0 <= r < 1.0:
            raise UserError(f"sparsity_ratio must be in [0, 1) (got {r!r})", field="sparsity_ratio",
                            app=f"The sparsity ratio must be at least 0 % and below 100 % (got {r!r})")
        if ":" in stype:
            n, m = nm(stype)
            if abs(r - n / m) > 1e-9:
                raise UserError(f"{stype} sparsity prunes {n} of every {m} weights: sparsity_ratio must be "
                                f"{n / m:g} (got {r:g})", field="sparsity_ratio",
                                app=f"{stype} prunes {n} of every {m} weights: set the sparsity ratio to {n / m:.0%}")
        if self.sequential and stype == "structured":
            raise UserError(f"{self.prune_method} with sequential calibration prunes unstructured or N:M sparsity "
                            f"only ({STRUCTURED_ONE_PASS})", field="calibration")
        if stype not in self.method.sparsity_types:
            raise UserError(f"{self.prune_method} prunes {self.method.sparsity_text} sparsity only",
                            field="sparsity_type")
        if self.targets == "all" and self.method.prunes_mlp_only(stype):
            raise UserError(f"--targets all is not defined for {self.prune_method} / {stype}: "
                            "NeuronRank scores and structured pruning address MLP neurons only", field="targets",
                            app=f"Pruning attention too is not defined for {self.prune_method} / {stype}: "
                                "NeuronRank scores and structured pruning address MLP neurons only")
        self.check_baseline_options()
        if n_layers is not None:
            self.check_layers(n_layers)
        if self.method.uses_exponents:
            for name in EXPONENT_LABELS:
                check_exponent(name, getattr(self, name))
        self.check_calibration()
        check_source_name(self.eval, "eval")

    def check_baseline_options(self) -> None:
        """OWL's layer sparsity, bias compensation and FLAP's fluctuation, each refused where it does not
        apply (one message per rule)."""
        stype, method = self.sparsity_type, self.method
        if self.owl:
            if stype != "unstructured":
                raise UserError(f"--layer-sparsity owl gives each layer its own unstructured sparsity: not defined "
                                f"for {stype} sparsity", field="layer_sparsity",
                                app=f"OWL layer sparsity allocates unstructured sparsity per layer: not defined for "
                                    f"{stype}")
            if method.outlier_metric is None:
                raise UserError(f"--layer-sparsity owl is not defined for {self.prune_method}", field="layer_sparsity")
        else:
            for name, flag in (("owl_threshold", "--owl-threshold"), ("owl_lambda", "--owl-lambda")):
                if getattr(self, name) is not None:
                    raise UserError(f"{flag} applies with --layer-sparsity owl only", field=name,
                                    app="{field} applies with OWL layer sparsity only")
        t = self.owl_threshold
        if t is not None and not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
            raise UserError(f"owl_threshold must be above 0 (got {t})", field="owl_threshold")
        if self.compensate is not None and stype != "structured":
            raise UserError(f"--compensate adds the pruned neurons' mean output back as a bias: structured "
                            f"sparsity only (got {stype})", field="compensate",
                            app=f"Bias compensation applies to structured sparsity only (got {stype})")
        if self.fluctuation is not None and self.prune_method != "flap":
            raise UserError(f"--fluctuation applies to flap only (got {self.prune_method})", field="fluctuation")
        if method.needs_moments and int(self.nsamples) < 2:
            raise UserError(f"{self.prune_method}'s fluctuation needs at least 2 calibration windows (nsamples "
                            f"{self.nsamples})", field="nsamples")

    def normalized(self) -> "PruneRequest":
        """What a run records: the exponents only for a method that uses them (None otherwise), so a
        baseline's run never shows exponents it ignored; the comparison group, the calibration order, the
        structured scope and the compensation resolved to the ones used (not "default"); OWL's M and λ
        where OWL runs; FLAP's fluctuation for flap."""
        calibration = None if not self.method.needs_stats else ("sequential" if self.sequential else "one-pass")
        req = replace(self, group=self.comparison_group, calibration=calibration, scope=self.structured_scope,
                      compensate=self.compensation if self.sparsity_type == "structured" else None,
                      owl_threshold=self.owl_m if self.owl else None, owl_lambda=self.owl_lam if self.owl else None,
                      fluctuation=(self.fluctuation or "flap") if self.prune_method == "flap" else None)
        if req.method.uses_exponents:
            return req
        return replace(req, alpha=None, beta=None, gamma=None)

    def check_layers(self, n_layers: int) -> None:
        p = self.pruning_last
        if p is not None and int(p) > n_layers:
            raise UserError(f"pruning_last {p} exceeds the model's {n_layers} layers", field="pruning_last",
                            app=f"'{{field}}' is {p}, but the model has {n_layers} layers")

    def pruned_layers(self, n_layers: int) -> list[int]:
        last = self.pruning_last
        return list(range(n_layers - int(last), n_layers)) if last else list(range(n_layers))


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
        return [PruneRequest(**{**base, "sparsity_ratio": r, "alpha": a, "beta": b, "gamma": g})
                for r, a, b, g in itertools.product(self.ratios, self.alphas, self.betas, self.gammas)]

    def validate(self) -> None:
        runs = self.grid()
        if not runs:
            raise UserError("the sweep grid is empty")
        if len(runs) > self.MAX_RUNS:
            raise UserError(f"a sweep of {len(runs)} runs is too large (at most {self.MAX_RUNS})")
        for r in runs:
            r.validate()


# the prune command's flags that a sweep takes as lists instead (its --ratios, --alphas, ...)
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


STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")
# a study's protocol: every field but these (how many trials, who runs them, where they are stored)
SEARCH_RUNTIME = ("trials", "workers", "storage", "study", "device", "save", "save_model", "save_masks",
                  "alpha", "beta", "gamma")
# fields added after studies existed: at their default they stay out of a study's protocol, so the same
# command resumes (and names) the same study as before
SEARCH_ADDED_LATER = {"layer_sparsity": "uniform", "owl_threshold": None, "owl_lambda": None, "compensate": None,
                      "fluctuation": None, "owl_lambda_range": None}


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
    owl_lambda_range: tuple | None = param(None, "--owl-lambda-range", "--owl_lambda_range", type=parse_range,
                                           help="LO,HI: search OWL's λ too (with --layer-sparsity owl)",
                                           label="OWL λ range")

    def range(self, name: str) -> tuple[float, float]:
        return parse_range(getattr(self, f"{name}_range"))

    @property
    def params(self) -> tuple[str, ...]:
        """The trial parameters: α, β, γ, and OWL's λ when its range is given."""
        return tuple(EXPONENT_LABELS) + (("owl_lambda",) if self.owl_lambda_range is not None else ())

    def validate(self) -> None:
        if self.prune_method != "neuronrank_old":
            raise UserError(f"search tunes the NeuronRank-OLD exponents: --prune_method must be neuronrank_old "
                            f"(got {self.prune_method}); the baselines are evaluated with every study",
                            field="prune_method")
        super().validate()
        if self.sparsity_ratio == 0:
            raise UserError("a search at sparsity_ratio 0 prunes nothing (every trial would be the dense model): "
                            "choose a ratio above 0", field="sparsity_ratio",
                            app="A search at sparsity ratio 0 prunes nothing (every trial would be the dense "
                                "model): choose a ratio above 0")
        for name in EXPONENT_LABELS:
            lo, hi = self.range(name)
            for v in (lo, hi):
                check_exponent(f"{name} range", v, field=f"{name}_range")
            if lo > hi:
                raise UserError(f"{name} range {lo:g},{hi:g} is reversed: write LO,HI with LO <= HI",
                                field=f"{name}_range")
        if self.study is not None and not STUDY_NAME.fullmatch(str(self.study)):
            raise UserError(f"study name {self.study!r}: use 1-100 letters, digits, '.', '_', ':' or '-'",
                            field="study")
        if self.storage is not None:
            check_storage_url(self.storage)
        if self.owl_lambda_range is not None:
            if not self.owl:
                raise UserError("--owl-lambda-range searches OWL's λ: it needs --layer-sparsity owl",
                                field="owl_lambda_range")
            if self.owl_lambda is not None:
                raise UserError("give --owl-lambda (fixed) or --owl-lambda-range (searched), not both",
                                field="owl_lambda_range")
            lo, hi = self.range("owl_lambda")
            if not (0 <= lo <= hi <= 1):
                raise UserError(f"owl_lambda range {lo:g},{hi:g}: write LO,HI with 0 <= LO <= HI <= 1",
                                field="owl_lambda_range")

    def normalized(self) -> "SearchRequest":
        """As a prune run records itself, but a searched λ stays unset (each trial has its own)."""
        req = super().normalized()
        return replace(req, owl_lambda=None) if self.owl_lambda_range is not None else req

    def protocol(self) -> dict:
        """The fields that define what a trial's number means (a joined study must agree on them); the
        calibration order and structured scope as used, and fields added later left out at their
        defaults (earlier studies keep their protocol and name)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in SEARCH_RUNTIME}
        out["calibration"] = "sequential" if self.sequential else "one-pass"
        out["scope"] = self.structured_scope
        for name, default in SEARCH_ADDED_LATER.items():
            if out.get(name) == default:
                out.pop(name)
        for name in EXPONENT_LABELS:
            out[f"{name}_range"] = list(self.range(name))
        if self.owl_lambda_range is not None:
            out["owl_lambda_range"] = list(self.range("owl_lambda"))
        return out

    def prune_request(self, alpha: float, beta: float, gamma: float, **over) -> PruneRequest:
        base = {f.name: getattr(self, f.name) for f in fields(PruneRequest)}
        return PruneRequest(**{**base, "alpha": alpha, "beta": beta, "gamma": gamma, "save": None,
                               "save_model": None, "save_masks": None, **over})


@dataclass(frozen=True)
class AblateRequest(EvalFields, CalibrationFields):
    """Role ablation: zero every neuron of a role class (the Roles page's classes and thresholds, from the
    cached statistics of the calibration fields), measure perplexity under the prune protocol, against
    random sets with the same number of neurons per layer; per layer band and single neurons too. One
    ablation is one evaluation of the dense model with the neurons zeroed and restored afterwards."""

    classes: str = param(",".join(ablation.CLASSES), "--classes",
                         help="comma-separated role classes to ablate: " + ", ".join(ablation.CLASSES)
                              + " (none: only --neurons)", label="Role classes")
    quantile: float | None = param(None, "--quantile", type=float,
                                   help=f"'high' = above this per-layer quantile of TF and of IDF (default "
                                        f"{ablation.DEFAULT_QUANTILE:g}, the Roles page's); or use --tf-threshold "
                                        "and --idf-threshold", label="Quantile")
    tf_threshold: float | None = param(None, "--tf-threshold", "--tf_threshold", type=float,
                                       help="one TF threshold for every layer (with --idf-threshold)",
                                       label="TF threshold")
    idf_threshold: float | None = param(None, "--idf-threshold", "--idf_threshold", type=float,
                                        help="one IDF threshold for every layer (with --tf-threshold)",
                                        label="IDF threshold")
    layers: str | None = param(None, "--layers", type=str, repeat=True,
                               help="ablate each class within layer bands A-B (comma-separated or repeated, "
                                    "e.g. 0-9,10-19); default: all layers at once", label="Layer bands")
    controls: int = param(3, "--controls", lo=0, hi=100,
                          help="random sets per class (and band), each with the class's neuron count in every "
                               "layer, seeded by --seed; each costs one evaluation", label="Random controls")
    neurons: str | None = param(None, "--neurons", type=str,
                                help="single neurons to ablate one at a time, LAYER:NEURON,... (e.g. 3:17,10:5)",
                                label="Single neurons")

    @property
    def class_list(self) -> tuple[str, ...]:
        return ablation.parse_classes(self.classes)

    @property
    def thresholds(self) -> dict:
        """What `ablation.class_masks` takes: a quantile (default 0.9) or the two global thresholds."""
        if self.tf_threshold is None and self.idf_threshold is None:
            q = ablation.DEFAULT_QUANTILE if self.quantile is None else float(self.quantile)
            return {"quantile": q, "tf_threshold": None, "idf_threshold": None}
        return {"quantile": None, "tf_threshold": float(self.tf_threshold), "idf_threshold": float(self.idf_threshold)}

    def bands(self, n_layers: int | None = None) -> tuple:
        return ablation.parse_bands(self.layers, n_layers)

    def neuron_list(self, n_layers: int | None = None, width: int | None = None) -> tuple:
        return ablation.parse_neurons(self.neurons, n_layers, width)

    def evaluation_count(self) -> int:
        """Perplexity evaluations beyond the dense one (at most: an empty class costs none):
        classes × bands × (1 + controls) + neurons."""
        per_class = max(1, len(self.bands())) * (1 + int(self.controls))
        return len(self.class_list) * per_class + len(self.neuron_list())

    def validate(self, n_layers: int | None = None, width: int | None = None) -> None:
        check_bounds(self)
        self.check_model_fields()
        self.check_calibration()
        check_source_name(self.eval, "eval")
        classes = self.class_list
        given = [name for name in ("tf_threshold", "idf_threshold") if getattr(self, name) is not None]
        if given and self.quantile is not None:
            raise UserError("give either --quantile or --tf-threshold and --idf-threshold, not both",
                            field="quantile", app="Choose per-layer quantile thresholds or global values, not both")
        if len(given) == 1:
            missing = ({"tf_threshold", "idf_threshold"} - set(given)).pop()
            raise UserError(f"global thresholds come in pairs: --{given[0].replace('_', '-')} needs "
                            f"--{missing.replace('_', '-')}", field=missing)
        for name in given:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise UserError(f"{name} must be a finite number (got {v!r})", field=name)
        q = self.quantile
        if q is not None and (isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 < q < 1.0):
            raise UserError(f"quantile must be between 0 and 1, both excluded (got {q!r})", field="quantile")
        self.bands(n_layers)
        neurons = self.neuron_list(n_layers, width)
        if not classes and not neurons:
            raise UserError("nothing to ablate: choose at least one role class or give --neurons", field="classes")

    def normalized(self) -> "AblateRequest":
        """What a run records: the classes in their canonical order and spelling, the thresholds actually
        used (the default quantile written out)."""
        t = self.thresholds
        return replace(self, classes=",".join(self.class_list) or ablation.NO_CLASS, quantile=t["quantile"])


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
                        "postgresql://user@host/db)", field="storage") from e
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql"):
        raise UserError(f"storage {text!r}: unknown database {backend!r}; use sqlite, postgresql or mysql",
                        field="storage")
    if backend == "sqlite" and not parsed.database:
        raise UserError("an SQLite storage needs a file (sqlite:///path/studies.db); in-memory studies "
                        "cannot be shared with workers", field="storage")


REQUESTS: dict[str, type] = {"stats": StatsRequest, "prune": PruneRequest, "ppl": PplRequest,
                             "search": SearchRequest, "ablate": AblateRequest}


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


def check_source_name(source: str, field: str | None = None) -> None:
    """A text source is a known name or file:PATH (whether the file exists is data.inputs' part).
    `field` is the request field that names it (calib, eval)."""
    s = str(source).strip()
    choices = ", ".join(TEXT_SOURCES)
    if s.startswith("file:"):
        if not s[len("file:"):].strip():
            raise UserError("enter the path of the text file after file:", field=field,
                            app="{field}: enter the path of the text file after file:.")
        return
    if s not in TEXT_SOURCES:
        raise UserError(f"unknown text source {s!r}; choose one of {choices} or file:PATH", field=field,
                        app=(f"{{field}}: enter {choices} or file:PATH." if not s else
                             f"{{field}}: {s!r} is not a text source: choose one of {choices}, or file:PATH for "
                             "a file of your own."))


# ----------------------------------------------------------------------------------------------
# the app's words


def field_spec(name: str):
    """The declaration of the request field `name` (field names mean the same in every request)."""
    for cls in (*REQUESTS.values(), SweepRequest):
        try:
            return spec(cls, name)
        except KeyError:
            continue
    return None


def app_message(error: Exception) -> str:
    """An error as the app shows it: a field's widget named by its label. A UserError's own app wording
    wins ({field} = the label); a message that begins with the field's name reads with the label instead;
    another message about a field is prefixed by the label."""
    text = str(error)
    field = getattr(error, "field", None)
    app = getattr(error, "app", None)
    s = field_spec(field) if field else None
    if s is None:
        return (app or text).replace("{field}", field or "")
    label = s.name_in_app
    if app:
        return app.replace("{field}", label)
    if text.startswith(field + " "):
        return f"'{label}'" + text[len(field):]
    return f"{label}: {text}"
