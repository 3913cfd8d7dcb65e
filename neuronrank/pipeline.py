"""Spec -> statistics, through the cache: the one path the CLI, the app's workers and tests share."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from neuronrank import corpora, distributed, models, store
from neuronrank.errors import UserError
from neuronrank.stats import SITES, NeuronStats, Progress, batched, collect

log = logging.getLogger(__name__)

MAX_SEQLEN = 4096  # never size anything by max_position_embeddings (Llama-3 says 131072)


@dataclass(frozen=True)
class StatsRequest:
    model: str = models.DEFAULT_MODEL
    calib: str = corpora.CALIB_DEFAULT
    nsamples: int = 64
    seqlen: int = 256
    seed: int = 0
    site: str = "gate"
    dtype: str = "auto"
    device: str = "auto"
    batch_size: int = 8
    topk: int = 16

    def validate(self) -> None:
        if self.site not in SITES:
            raise UserError(f"unknown activation site {self.site!r}; choose one of {', '.join(SITES)}")
        if int(self.nsamples) < 1:
            raise UserError(f"nsamples must be at least 1 (got {self.nsamples})")
        if not 2 <= int(self.seqlen) <= MAX_SEQLEN:
            raise UserError(f"seqlen must be between 2 and {MAX_SEQLEN} (got {self.seqlen})")
        if int(self.batch_size) < 1:
            raise UserError(f"batch size must be at least 1 (got {self.batch_size})")
        if not 1 <= int(self.topk) <= 256:
            raise UserError(f"topk must be between 1 and 256 (got {self.topk})")


@dataclass
class StatsResult:
    stats: NeuronStats
    entry: store.Entry
    cached: bool
    seconds: float


def check_seqlen(model, seqlen: int) -> None:
    ctx = models.context_length(model)
    if ctx is not None and seqlen > ctx:
        raise UserError(f"seqlen {seqlen} is longer than the model's context ({ctx} tokens)")


def cache_params(req: StatsRequest, ref: models.ModelRef, corpus: corpora.Corpus) -> dict:
    """The cache key's content: model identity, text identity and every knob that changes numbers."""
    dtype = models.dtype_name(models.resolve_dtype(req.dtype, models.resolve_device(req.device)))
    p = asdict(req)
    p.pop("device"), p.pop("batch_size")  # do not change the numbers beyond float noise
    return {**p, "dtype": dtype, "model_identity": ref.identity(), "calib_fingerprint": corpus.fingerprint}


def get_stats(req: StatsRequest, progress: Progress | None = None, bundle=None,
              recompute: bool = False, device_map=None) -> StatsResult:
    """Cached statistics for `req`, computed once. `bundle` is an already loaded (model, tokenizer)."""
    req.validate()
    t0 = time.perf_counter()
    ref = models.resolve(req.model)
    corpus = corpora.load_corpus(req.calib)
    params = cache_params(req, ref, corpus)
    entry = None if recompute else store.find_stats(params)
    if entry is not None:
        try:
            return StatsResult(store.load_stats(entry), entry, True, time.perf_counter() - t0)
        except store.CorruptEntry as e:
            log.warning("%s; recomputing", e)
            store.delete_entry(entry.key, missing_ok=True)
    model, tokenizer = bundle or models.load(req.model, req.device, req.dtype, device_map=device_map)
    check_seqlen(model, req.seqlen)
    ids = corpora.token_stream(tokenizer, corpus)
    windows = corpora.calibration_windows(ids, req.nsamples, req.seqlen, req.seed)
    if not distributed.launched():
        stats = collect(model, batched(windows, req.batch_size), site=req.site, progress=progress, topk=req.topk)
    else:
        stats = _collect_sharded(model, windows, req, progress)
    stats.meta.update(model=req.model, calib=req.calib, nsamples=req.nsamples, seed=req.seed,
                      dtype=params["dtype"], seconds=time.perf_counter() - t0,
                      world_size=distributed.world() if distributed.launched() else 1)
    if distributed.rank() == 0:
        entry = store.save_stats(params, stats)
    distributed.barrier()
    if distributed.rank() != 0:
        entry = store.find_stats(params)
    return StatsResult(stats, entry, False, time.perf_counter() - t0)


def _collect_sharded(model, windows, req: StatsRequest, progress):
    """This rank's contiguous share of the windows, then the all-reduce: every rank ends with the
    single-process numbers."""
    device = next(model.parameters()).device
    rank, world = distributed.init(device)
    if len(windows) < world:
        raise UserError(f"nsamples ({len(windows)}) must be at least the number of ranks ({world})")
    start, end = distributed.share(len(windows), rank, world)
    part = collect(model, batched(windows[start:end], req.batch_size), site=req.site,
                   progress=progress if rank == 0 else None, topk=req.topk, first_window=start,
                   keep_windows=False)
    return distributed.all_reduce_stats(part, device, windows.numpy())


# ----------------------------------------------------------------------------------------------
# run kinds executed by neuronrank.jobs (in a worker process) and by the CLI (in process)


def token_progress(report, stage: str, start: float = 0.0, span: float = 1.0):
    """Adapt a (done, total) token callback to the run store's (fraction, message) with rate and ETA."""
    t0 = time.perf_counter()

    def update(done: int, total: int | None) -> None:
        dt = max(time.perf_counter() - t0, 1e-9)
        rate = done / dt
        frac = done / total if total else 0.0
        eta = (total - done) / rate if total and rate > 0 else float("nan")
        report(start + span * frac, f"{stage}: {done:,}/{total or 0:,} tokens, {rate:,.0f} tok/s, ETA {eta:.0f}s",
               done == total)

    return update


def stats_job(params: dict, report) -> dict:
    req = StatsRequest(**params)
    res = get_stats(req, progress=token_progress(report, "statistics"))
    return {"cache_key": res.entry.key, "cached": res.cached, "seconds": round(res.seconds, 3),
            "tokens": int(res.stats.tokens[0]), "layers": res.stats.n_layers, "width": res.stats.width}


# ----------------------------------------------------------------------------------------------
# prune + evaluate


@dataclass(frozen=True)
class PruneRequest:
    """A prune + perplexity run. Field names follow the original's flags (Wanda-style)."""

    model: str = models.DEFAULT_MODEL
    prune_method: str = "neuronrank_old"
    sparsity_ratio: float = 0.5
    sparsity_type: str = "unstructured"
    pruning_last: int | None = None
    alpha: float = 1.0  # --weight-exp
    beta: float = 1.0  # --tf-exp
    gamma: float = 1.0  # --idf-exp
    group: str = "matrix"
    scope: str = "layer"
    targets: str = "mlp"
    # calibration
    calib: str = corpora.CALIB_DEFAULT
    nsamples: int = 64
    seqlen: int = 256
    seed: int = 0
    site: str = "gate"
    # evaluation
    eval: str = corpora.EVAL_DEFAULT
    eval_seqlen: int = 512
    eval_windows: int | None = None  # None: 16 on a CPU, all on a GPU; 0: all
    dtype: str = "auto"
    device: str = "auto"
    save: str | None = None
    save_model: str | None = None

    def spec(self):
        from neuronrank.pruning import PruneSpec

        return PruneSpec(method=self.prune_method, sparsity_ratio=self.sparsity_ratio,
                         sparsity_type=self.sparsity_type, last=self.pruning_last, group=self.group,
                         scope=self.scope, targets=self.targets, alpha=self.alpha, beta=self.beta,
                         gamma=self.gamma, seed=self.seed)

    def stats_request(self) -> StatsRequest:
        return StatsRequest(model=self.model, calib=self.calib, nsamples=self.nsamples, seqlen=self.seqlen,
                            seed=self.seed, site=self.site, dtype=self.dtype, device=self.device)


def _eval_windows_for(req_windows: int | None, device) -> int | None:
    if req_windows is None:
        return None if device.type == "cuda" else 16
    if int(req_windows) < 0:
        raise UserError(f"eval-windows must be 0 (all) or positive (got {req_windows})")
    return None if int(req_windows) == 0 else int(req_windows)


def eval_windows(tokenizer, source: str, seqlen: int, windows: int | None):
    corpus = corpora.load_corpus(source)
    ids = corpora.token_stream(tokenizer, corpus)
    return corpora.evaluation_windows(ids, seqlen, windows), corpus


def measure_ppl(model, tokenizer, source: str, seqlen: int, windows: int | None, identity: dict,
                progress=None, use_cache: bool = True):
    """Perplexity of `model` on `source`; with `use_cache`, a dense result is kept per model + protocol."""
    from neuronrank import evaluate
    from neuronrank.paths import atomic_write_json, cache_dir, short_hash

    check_seqlen(model, seqlen)
    win, corpus = eval_windows(tokenizer, source, seqlen, windows)
    dtype = models.dtype_name(next(model.parameters()).dtype)
    key = short_hash([identity, dtype, source, corpus.fingerprint, seqlen, int(win.shape[0])])
    path = cache_dir() / "ppl" / f"{key}.json"
    if use_cache and path.is_file():
        try:
            return evaluate.Perplexity(**json.loads(path.read_text())), True
        except (ValueError, TypeError):
            pass
    res = evaluate.perplexity(model, win, progress=progress, source=source)
    if use_cache:
        try:
            atomic_write_json(path, res.as_dict())
        except OSError as e:
            log.warning("cannot cache dense perplexity: %s", e)
    return res, False


def prune_job(params: dict, report) -> dict:
    """Load, (calibrate), evaluate dense (cached), prune, report sparsity, evaluate, save."""
    from neuronrank import pruning

    req = PruneRequest(**params)
    spec = req.spec()
    spec.validate()
    if int(req.eval_seqlen) < 2:
        raise UserError(f"eval-seqlen must be at least 2 (got {req.eval_seqlen})")
    timings = {}
    t = time.perf_counter()
    report(0.01, "loading model", True)
    ref = models.resolve(req.model)
    identity = ref.identity()
    model, tok = models.load(req.model, req.device, req.dtype)
    n_layers = len(models.decoder_layers(model))
    spec.validate(n_layers)
    windows = _eval_windows_for(req.eval_windows, next(model.parameters()).device)
    timings["load"] = time.perf_counter() - t

    stats, stats_key = None, None
    if pruning.METHODS[spec.method].needs_stats:
        t = time.perf_counter()
        sreq = req.stats_request()
        sres = get_stats(sreq, progress=token_progress(report, "calibration statistics", 0.05, 0.3), bundle=(model, tok))
        stats, stats_key = sres.stats, sres.entry.key
        timings["stats"] = time.perf_counter() - t

    t = time.perf_counter()
    dense, dense_cached = measure_ppl(model, tok, req.eval, req.eval_seqlen, windows, identity,
                                      progress=token_progress(report, "dense perplexity", 0.35, 0.25))
    timings["dense_eval"] = time.perf_counter() - t

    t = time.perf_counter()
    report(0.6, "pruning", True)
    info = pruning.prune(model, spec, stats)
    sparsity = pruning.sparsity_report(model)
    timings["prune"] = time.perf_counter() - t

    t = time.perf_counter()
    pruned, _ = measure_ppl(model, tok, req.eval, req.eval_seqlen, windows, identity, use_cache=False,
                            progress=token_progress(report, "pruned perplexity", 0.62, 0.35))
    timings["eval"] = time.perf_counter() - t

    result = {
        "dense_ppl": dense.ppl, "pruned_ppl": pruned.ppl, "dense_cached": dense_cached,
        "protocol": {"source": req.eval, "seqlen": pruned.seqlen, "windows": pruned.windows,
                     "tokens": pruned.tokens},
        "sparsity": {k: sparsity[k] for k in ("mlp", "attention", "all_linear")},
        "sparsity_modules": sparsity["modules"],
        "pruned_layers": info["layers"], "stats_key": stats_key,
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
    if "neurons_kept" in info:
        result["neurons_kept"] = info["neurons_kept"]
    t = time.perf_counter()
    if req.save_model:
        report(0.98, "saving model", True)
        result["saved_model"] = save_model(model, tok, req.save_model, info, spec)
    if req.save:
        result["saved"] = save_results(req.save, params, result, sparsity)
    timings["save"] = time.perf_counter() - t
    result["timings"] = {k: round(v, 3) for k, v in timings.items()}
    return result


def save_model(model, tok, folder: str, info: dict, spec) -> dict:
    """Structured with equal counts per layer: a physically smaller model; else the zeroed model."""
    from neuronrank import pruning

    out = Path(folder).expanduser().resolve()
    _check_model_folder(out)
    note = "zeroed weights (same shapes)"
    if spec.sparsity_type == "structured":
        kept = set(info["neurons_kept"].values())
        n_layers = len(models.decoder_layers(model))
        if len(info["neurons_kept"]) == n_layers and len(kept) == 1:
            pruning.slice_structured(model, {int(k): v for k, v in info["dropped"].items()})
            note = f"sliced: intermediate_size {kept.pop()}"
        else:
            note = ("zeroed weights (same shapes): layers keep different neuron counts"
                    + (" (pruning_last)" if len(info["neurons_kept"]) < n_layers else ""))
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"cannot save the model to {out}: {e.strerror or e}") from e
    return {"path": str(out), "format": note}


def _check_model_folder(out: Path) -> None:
    """A save folder is replaced whole: never one that holds other things (the repo, the cache, home)."""
    from neuronrank.paths import REPO_ROOT, cache_dir

    for keep in (Path.cwd(), cache_dir(), Path.home(), REPO_ROOT):
        keep = keep.resolve()
        if out == keep or out in keep.parents:
            raise UserError(f"refusing to save a model over {out}: it contains {keep}")
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file()):
        raise UserError(f"{out} exists and is not a saved model; choose a new or empty folder")


def save_results(folder: str, params: dict, result: dict, sparsity: dict) -> dict:
    from neuronrank.paths import atomic_write_bytes, atomic_write_json

    out = Path(folder).expanduser().resolve()
    try:
        atomic_write_json(out / "result.json", {"params": params, "result": result})
        frame = pd.DataFrame(sparsity["modules"])
        atomic_write_bytes(out / "sparsity.csv", frame.to_csv(index=False).encode())
    except OSError as e:
        raise UserError(f"cannot write results to {out}: {e.strerror or e}") from e
    return {"path": str(out)}


@dataclass(frozen=True)
class PplRequest:
    model: str = models.DEFAULT_MODEL
    eval: str = corpora.EVAL_DEFAULT
    eval_seqlen: int = 512
    eval_windows: int | None = None
    dtype: str = "auto"
    device: str = "auto"


def ppl_job(params: dict, report) -> dict:
    req = PplRequest(**params)
    if int(req.eval_seqlen) < 2:
        raise UserError(f"eval-seqlen must be at least 2 (got {req.eval_seqlen})")
    report(0.01, "loading model", True)
    identity = models.resolve(req.model).identity()
    model, tok = models.load(req.model, req.device, req.dtype)
    windows = _eval_windows_for(req.eval_windows, next(model.parameters()).device)
    res, cached = measure_ppl(model, tok, req.eval, req.eval_seqlen, windows, identity,
                              progress=token_progress(report, "perplexity", 0.05, 0.95))
    return {"ppl": res.ppl, "cached": cached, "protocol": {"source": req.eval, "seqlen": res.seqlen,
                                                           "windows": res.windows, "tokens": res.tokens},
            "seconds": round(res.seconds, 3)}


JOB_KINDS = {"stats": stats_job, "prune": prune_job, "ppl": ppl_job}
