"""Spec -> statistics, through the cache: the one path the CLI, the app's workers and tests share."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

from neuronrank import corpora, models, store
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
              recompute: bool = False) -> StatsResult:
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
            store.delete_entry(entry.key)
    model, tokenizer = bundle or models.load(req.model, req.device, req.dtype)
    check_seqlen(model, req.seqlen)
    ids = corpora.token_stream(tokenizer, corpus)
    windows = corpora.calibration_windows(ids, req.nsamples, req.seqlen, req.seed)
    stats = collect(model, batched(windows, req.batch_size), site=req.site, progress=progress, topk=req.topk)
    stats.meta.update(model=req.model, calib=req.calib, nsamples=req.nsamples, seed=req.seed,
                      dtype=params["dtype"], seconds=time.perf_counter() - t0)
    entry = store.save_stats(params, stats)
    return StatsResult(stats, entry, False, time.perf_counter() - t0)


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


JOB_KINDS = {"stats": stats_job}
