"""The stages wired together: request -> statistics (through the cache) -> prune -> perplexity.

The one path the CLI, the app's workers and the tests share. Each job takes a validated request from
`neuronrank.requests` and a `report(fraction, message, force=False)` callback, and returns a
JSON-able result that the run store keeps.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass

from neuronrank import corpora, distributed, models, store
from neuronrank.errors import UserError
from neuronrank.requests import PplRequest, PruneRequest, StatsRequest
from neuronrank.stats import NeuronStats, Progress, batched, collect

log = logging.getLogger(__name__)


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


def stats_job(req: StatsRequest, report) -> dict:
    res = get_stats(req, progress=token_progress(report, "statistics"))
    return {"cache_key": res.entry.key, "cached": res.cached, "seconds": round(res.seconds, 3),
            "tokens": int(res.stats.tokens[0]), "layers": res.stats.n_layers, "width": res.stats.width}


# ----------------------------------------------------------------------------------------------
# perplexity (a dense result is cached per model and protocol)


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


def _on_gpu(model) -> bool:
    return next(model.parameters()).device.type == "cuda"


def ppl_job(req: PplRequest, report) -> dict:
    report(0.01, "loading model", True)
    identity = models.resolve(req.model).identity()
    model, tok = models.load(req.model, req.device, req.dtype)
    res, cached = measure_ppl(model, tok, req.eval, req.eval_seqlen, req.eval_window_cap(_on_gpu(model)),
                              identity, progress=token_progress(report, "perplexity", 0.05, 0.95))
    return {"ppl": res.ppl, "cached": cached, "protocol": _protocol(req.eval, res),
            "seconds": round(res.seconds, 3)}


def _protocol(source: str, res) -> dict:
    return {"source": source, "seqlen": res.seqlen, "windows": res.windows, "tokens": res.tokens}


# ----------------------------------------------------------------------------------------------
# prune + evaluate


class _Timer:
    """Named stage timings, in seconds, rounded once for the result."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def stage(self, name: str):
        timer = self

        class _Stage:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                timer.seconds[name] = time.perf_counter() - self.t
                return False

        return _Stage()

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.seconds.items()}


def prune_job(req: PruneRequest, report) -> dict:
    """Load, (calibrate), evaluate dense (cached), prune, report sparsity, evaluate, save."""
    from neuronrank import export, pruning

    timer = _Timer()
    with timer.stage("load"):
        report(0.01, "loading model", True)
        identity = models.resolve(req.model).identity()
        model, tok = models.load(req.model, req.device, req.dtype)
        req.check_layers(len(models.decoder_layers(model)))
        windows = req.eval_window_cap(_on_gpu(model))

    stats, stats_key = None, None
    if req.method.needs_stats:
        with timer.stage("stats"):
            sres = get_stats(req.stats_request(), bundle=(model, tok),
                             progress=token_progress(report, "calibration statistics", 0.05, 0.3))
            stats, stats_key = sres.stats, sres.entry.key

    with timer.stage("dense_eval"):
        dense, dense_cached = measure_ppl(model, tok, req.eval, req.eval_seqlen, windows, identity,
                                          progress=token_progress(report, "dense perplexity", 0.35, 0.25))

    with timer.stage("prune"):
        report(0.6, "pruning", True)
        info = pruning.prune(model, req, stats)
        sparsity = pruning.sparsity_report(model)

    with timer.stage("eval"):
        pruned, _ = measure_ppl(model, tok, req.eval, req.eval_seqlen, windows, identity, use_cache=False,
                                progress=token_progress(report, "pruned perplexity", 0.62, 0.35))

    result = {
        "dense_ppl": dense.ppl, "pruned_ppl": pruned.ppl, "dense_cached": dense_cached,
        "protocol": _protocol(req.eval, pruned),
        "sparsity": {k: sparsity[k] for k in ("mlp", "attention", "all_linear")},
        "sparsity_modules": sparsity["modules"],
        "pruned_layers": info["layers"], "stats_key": stats_key,
    }
    if "neurons_kept" in info:
        result["neurons_kept"] = info["neurons_kept"]
    with timer.stage("save"):
        if req.save_model:
            report(0.98, "saving model", True)
            result["saved_model"] = export.save_model(model, tok, req.save_model, info, req)
        if req.save:
            result["timings"] = timer.rounded()
            result["saved"] = export.save_results(req.save, asdict(req), result, sparsity)
    result["timings"] = timer.rounded()
    return result


def search_job(req, report) -> dict:
    """An Optuna study over the exponents (neuronrank.search); its workers load the model once."""
    from neuronrank import search

    return search.search_job(req, report)


# kind -> job; the request class of each kind is neuronrank.requests.REQUESTS[kind]
JOB_KINDS = {"stats": stats_job, "prune": prune_job, "ppl": ppl_job, "search": search_job}
