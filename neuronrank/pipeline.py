"""The stages wired together: request -> statistics (through the cache) -> prune -> perplexity.

The one path the CLI, the app's workers and the tests share. Each job takes a validated request from
`neuronrank.requests` and a `report(fraction, message, force=False)` callback, and returns a
JSON-able result that the run store keeps.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass

from neuronrank import corpora, distributed, models, store
from neuronrank.errors import UserError
from neuronrank.paths import short_hash
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


def cache_params(req: StatsRequest, ref: models.ModelRef, corpus: corpora.Corpus, tokens_sha256: str) -> dict:
    """The cache key's content: model identity, text identity, the checksum of the token stream
    actually used (a damaged token file can never produce a validly keyed entry) and every knob
    that changes numbers."""
    dtype = models.dtype_name(models.resolve_dtype(req.dtype, models.resolve_device(req.device)))
    p = asdict(req)
    p.pop("device"), p.pop("batch_size")  # do not change the numbers beyond float noise
    if not p.get("skip_first"):
        p.pop("skip_first", None)  # 0 (the original) keeps the keys of entries written before the field
    return {**p, "dtype": dtype, "model_identity": ref.identity(), "calib_fingerprint": corpus.fingerprint,
            "tokens_sha256": tokens_sha256}


LARGE_TOKENS = 1_000_000  # above this, a statistics pass says how much work it is before starting
LONG_SECONDS = 300  # ... and, once its rate is measured, how long it will take


def _announce(progress: Progress | None, windows: int, seqlen: int) -> Progress | None:
    """State the token count of a large pass up front, then the measured time once the first
    batches have run: a typo like --nsamples 1000000 must not run silently for hours."""
    total = windows * seqlen
    if total >= LARGE_TOKENS:
        log.warning("statistics over %s windows x %s tokens = %s tokens", f"{windows:,}", f"{seqlen:,}",
                    f"{total:,}")
    t0, said = time.perf_counter(), []

    def update(done: int, total_: int | None) -> None:
        dt = time.perf_counter() - t0
        if not said and done and dt >= 2.0:
            said.append(True)
            eta = (total - done) * dt / done
            if eta >= LONG_SECONDS:
                log.warning("at the measured %s tokens/s this pass takes about %s more; stop it with "
                            "Ctrl-C (or Cancel in the app)", f"{done / dt:,.0f}", _duration(eta))
        if progress is not None:
            progress(done, total_)

    return update


def _duration(seconds: float) -> str:
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min"


def get_stats(req: StatsRequest, progress: Progress | None = None, bundle=None,
              recompute: bool = False, device_map=None, stage=None) -> StatsResult:
    """Cached statistics for `req`, computed once. `bundle` is an already loaded (model, tokenizer);
    `stage(name)` is told each step before it starts (reading the text, loading or converting the
    model, tokenizing, the pass itself through `progress`, writing the entry).

    The key includes the checksum of the (verified) token stream. When an entry with these
    parameters may exist, only the tokenizer is loaded to compute it; the model loads on a miss."""
    req.validate()
    stage = stage or (lambda name: None)
    t0 = time.perf_counter()
    ref = models.resolve(req.model)
    stage("reading the calibration text")
    corpus = corpora.load_corpus(req.calib, role="calib")
    params = cache_params(req, ref, corpus, tokens_sha256=None)
    tokenizer = windows = None
    if bundle is not None:
        tokenizer = bundle[1]
    elif not recompute and store.has_candidate(params):
        stage("loading the tokenizer")
        tokenizer = models.load_tokenizer(req.model)
    if tokenizer is not None:
        stage("tokenizing the calibration text")
        windows, params["tokens_sha256"] = corpora.calibration_set(tokenizer, corpus, req.nsamples, req.seqlen,
                                                                   req.seed)
        entry = None if recompute else store.find_stats(params)
        if entry is not None:
            try:
                return StatsResult(store.load_stats(entry), entry, True, time.perf_counter() - t0)
            except store.CorruptEntry as e:
                log.warning("%s; recomputing", e)
                store.delete_entry(entry.key, missing_ok=True)
    if bundle is None:
        stage(_load_stage(ref))
    model, tokenizer = bundle or models.load(req.model, req.device, req.dtype, device_map=device_map)
    check_seqlen(model, req.seqlen)
    if windows is None:
        stage("tokenizing the calibration text")
        windows, params["tokens_sha256"] = corpora.calibration_set(tokenizer, corpus, req.nsamples, req.seqlen,
                                                                   req.seed)
    corpora.check_vocab(windows.flatten().numpy(), models.vocab_size(model))
    progress = _announce(progress, len(windows), req.seqlen) if distributed.rank() == 0 else progress
    if not distributed.launched():
        stats = collect(model, batched(windows, req.batch_size), site=req.site, progress=progress, topk=req.topk,
                        skip_first=req.skip_first)
    else:
        stats = _collect_sharded(model, windows, req, progress)
    stats.meta.update(model=req.model, calib=req.calib, nsamples=req.nsamples, seed=req.seed,
                      dtype=params["dtype"], seconds=time.perf_counter() - t0,
                      world_size=distributed.world() if distributed.launched() else 1)
    if distributed.rank() == 0:
        stage("writing the cache entry")
        entry = store.save_stats(params, stats)
    distributed.barrier()
    if distributed.rank() != 0:
        entry = store.find_stats(params)
    return StatsResult(stats, entry, False, time.perf_counter() - t0)


def calibration_windows(req: StatsRequest, model, tokenizer):
    """The [nsamples, seqlen] calibration windows `req` names (those get_stats computes statistics of)."""
    check_seqlen(model, req.seqlen)
    corpus = corpora.load_corpus(req.calib, role="calib")
    windows, _ = corpora.calibration_set(tokenizer, corpus, req.nsamples, req.seqlen, req.seed)
    corpora.check_vocab(windows.flatten().numpy(), models.vocab_size(model))
    return windows


def _load_stage(ref) -> str:
    """The name of the loading step: a GGUF's one-off conversion takes most of a first run."""
    if ref.kind in ("alias", "gguf") and not (models.converted_path(ref.path) / "config.json").is_file():
        return "converting the GGUF model to safetensors (once, about 20 s on a CPU)"
    return "loading the model"


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
                   keep_windows=False, skip_first=req.skip_first)
    return distributed.all_reduce_stats(part, device, windows.numpy())


# ----------------------------------------------------------------------------------------------
# run kinds executed by neuronrank.jobs (in a worker process) and by the CLI (in process)


def token_progress(report, stage: str, start: float = 0.0, span: float = 1.0):
    """Adapt a (done, total) token callback to the run store's (fraction, message) with rate and ETA."""
    t0 = time.perf_counter()
    report(start, f"{stage}: starting", True)  # the stage shows before its first batch finishes

    def update(done: int, total: int | None) -> None:
        dt = max(time.perf_counter() - t0, 1e-9)
        rate = done / dt
        frac = done / total if total else 0.0
        eta = (total - done) / rate if total and rate > 0 else float("nan")
        report(start + span * frac, f"{stage}: {done:,}/{total or 0:,} tokens, {rate:,.0f} tok/s, ETA {eta:.0f}s",
               done == total)

    return update


def stats_job(req: StatsRequest, report) -> dict:
    res = get_stats(req, progress=token_progress(report, "statistics", 0.1, 0.88),
                    stage=lambda name: report(0.98 if name.startswith("writing") else 0.02, name, True))
    return {"cache_key": res.entry.key, "cached": res.cached, "seconds": round(res.seconds, 3),
            "tokens": int(res.stats.tokens[0]), "layers": res.stats.n_layers, "width": res.stats.width}


# ----------------------------------------------------------------------------------------------
# perplexity (a dense result is cached per model and protocol)


def eval_windows(tokenizer, source: str, seqlen: int, windows: int | None):
    corpus = corpora.load_corpus(source, role="eval")
    ids = corpora.token_stream(tokenizer, corpus)
    if corpus.eval_windows is not None:  # c4: the first 256 × seqlen tokens (upstream)
        windows = corpus.eval_windows if windows is None else min(windows, corpus.eval_windows)
    return corpora.evaluation_windows(ids, seqlen, windows), corpus


def _body_sha256(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _ppl_record(res) -> dict:
    body = res.as_dict()
    return {"result": body, "sha256": _body_sha256(body)}


def _read_ppl(path, source: str, seqlen: int, windows: int):
    """A cached dense perplexity, or None when the file is missing or fails its checks (checksum,
    schema, protocol, ppl = exp(nll / tokens))."""
    from neuronrank import evaluate

    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
        body = rec["result"]
        if _body_sha256(body) != rec["sha256"]:
            raise ValueError("checksum differs")
        res = evaluate.Perplexity(**body)
        if (res.seqlen, res.windows, res.tokens) != (seqlen, windows, windows * (seqlen - 1)):
            raise ValueError("protocol differs")
        if not (math.isfinite(res.nll) and res.nll >= 0 and res.tokens > 0):
            raise ValueError("nll out of range")
        mean = res.nll / res.tokens
        expect = math.inf if mean > 709 else math.exp(mean)  # as evaluate.perplexity computes it
        if not (res.ppl == expect or math.isclose(res.ppl, expect, rel_tol=1e-6)):
            raise ValueError("ppl does not match nll / tokens")
        return res
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        log.warning("dense perplexity cache %s is damaged (%s); measuring again", path.name, e)
        return None


def measure_ppl(model, tokenizer, source: str, seqlen: int, windows: int | None, identity: dict,
                progress=None, use_cache: bool = True):
    """Perplexity of `model` on `source`; with `use_cache`, a dense result is kept per model + protocol
    (verified on load: checksum, schema and range; a damaged one is measured again)."""
    from neuronrank import evaluate
    from neuronrank.paths import atomic_write_json, cache_dir

    check_seqlen(model, seqlen)
    win, corpus = eval_windows(tokenizer, source, seqlen, windows)
    corpora.check_vocab(win.flatten().numpy(), models.vocab_size(model))
    dtype = models.dtype_name(next(model.parameters()).dtype)
    key = short_hash([identity, dtype, source, corpus.fingerprint, seqlen, int(win.shape[0])])
    path = cache_dir() / "ppl" / f"{key}.json"
    if use_cache:
        cached = _read_ppl(path, source, seqlen, int(win.shape[0]))
        if cached is not None:
            return cached, True
    res = evaluate.perplexity(model, win, progress=progress, source=source)
    if use_cache:
        try:
            atomic_write_json(path, _ppl_record(res))
        except OSError as e:
            log.warning("cannot cache dense perplexity: %s", e)
    return res, False


def _on_gpu(model) -> bool:
    return next(model.parameters()).device.type == "cuda"


def ppl_job(req: PplRequest, report) -> dict:
    ref = models.resolve(req.model)
    report(0.01, _load_stage(ref), True)
    identity = ref.identity()
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
    tasks = manager = None
    if req.eval_tasks:  # a typo in a task name, or a task without its data, must not cost the run
        from neuronrank import zeroshot

        report(0.0, "zero-shot tasks: checking names and data", True)
        tasks = zeroshot.parse_tasks(req.eval_tasks)
        manager = zeroshot.check_tasks(tasks, req.eval_tasks_path)
        zeroshot.check_data(tasks, manager)
    with timer.stage("load"):
        ref = models.resolve(req.model)
        report(0.01, _load_stage(ref), True)
        identity = ref.identity()
        model, tok = models.load(req.model, req.device, req.dtype)
        req.check_layers(len(models.decoder_layers(model)))
        windows = req.eval_window_cap(_on_gpu(model))

    stats, stats_key, calib = None, None, None
    if req.sequential:
        with timer.stage("stats"):  # the windows only: each layer is calibrated while pruning
            report(0.05, "calibration windows", True)
            calib = calibration_windows(req.stats_request(), model, tok)
    elif req.method.needs_stats:
        with timer.stage("stats"):
            sres = get_stats(req.stats_request(), bundle=(model, tok),
                             progress=token_progress(report, "calibration statistics", 0.05, 0.3),
                             stage=lambda name: report(0.05, f"calibration statistics: {name}", True))
            stats, stats_key = sres.stats, sres.entry.key

    with timer.stage("dense_eval"):
        dense, dense_cached = measure_ppl(model, tok, req.eval, req.eval_seqlen, windows, identity,
                                          progress=token_progress(report, "dense perplexity", 0.35, 0.25))

    with timer.stage("prune"):
        report(0.6, "pruning layer by layer" if req.sequential else "pruning", True)
        info = pruning.prune(model, req, stats, windows=calib)
        sparsity = pruning.sparsity_report(model)

    with timer.stage("eval"):
        pruned, _ = measure_ppl(model, tok, req.eval, req.eval_seqlen, windows, identity, use_cache=False,
                                progress=token_progress(report, "pruned perplexity", 0.62, 0.35))

    zero_shot = zero_shot_failed = None
    if tasks:
        from neuronrank import zeroshot

        with timer.stage("zero_shot"):
            report(0.97, "zero-shot tasks (lm-eval)", True)
            try:
                zero_shot = zeroshot.evaluate_tasks(model, tok, tasks, include_path=req.eval_tasks_path,
                                                    manager=manager)
            except zeroshot.ZeroShotFailed as e:  # the perplexities stay: the run ends done, naming the task
                zero_shot, zero_shot_failed = e.done or None, {"task": e.task, "error": str(e)}

    result = {
        "dense_ppl": dense.ppl, "pruned_ppl": pruned.ppl, "dense_cached": dense_cached,
        "protocol": _protocol(req.eval, pruned),
        "sparsity": {k: sparsity[k] for k in ("mlp", "attention", "all_linear")},
        "sparsity_modules": sparsity["modules"],
        "pruned_layers": info["layers"], "stats_key": stats_key,
    }
    if "neurons_kept" in info:
        result["neurons_kept"] = info["neurons_kept"]
    if zero_shot is not None:
        result["zero_shot"] = zero_shot
    if zero_shot_failed is not None:
        result["zero_shot_failed"] = zero_shot_failed
    with timer.stage("save"):
        # a failed write never throws the perplexities away: the run ends done, its result names
        # what was not written and why (the CLI then exits 1 with one error line)
        if req.save_model:
            report(0.98, "saving model", True)
            try:
                result["saved_model"] = export.save_model(model, tok, req.save_model, info, req)
            except (UserError, OSError) as e:
                result.setdefault("not_written", []).append(_not_written("--save_model", req.save_model, e))
        if req.save:
            result["timings"] = timer.rounded()
            try:
                result["saved"] = export.save_results(req.save, asdict(req), result, sparsity)
            except (UserError, OSError) as e:
                result.setdefault("not_written", []).append(_not_written("--save", req.save, e))
    result["timings"] = timer.rounded()
    return result


def _not_written(flag: str, path: str, e: BaseException) -> dict:
    log.error("%s %s was not written: %s", flag, path, e)
    return {"target": flag, "path": str(path), "error": str(e) or type(e).__name__}


def search_job(req, report) -> dict:
    """An Optuna study over the exponents (neuronrank.search); its workers load the model once."""
    from neuronrank import search

    return search.search_job(req, report)


# kind -> job; the request class of each kind is neuronrank.requests.REQUESTS[kind]
JOB_KINDS = {"stats": stats_job, "prune": prune_job, "ppl": ppl_job, "search": search_job}
