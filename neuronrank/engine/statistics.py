"""Statistics of a request: through the cache, computed once.

    get_stats(req)                          the cached NeuronStats of a StatsRequest (computed on a miss;
                                            sharded over the ranks under torchrun)
    calibration_windows(req, model, tok)    the calibration windows those statistics are of

The cache key (`cache_params`) holds the model's identity, the text's fingerprint, the checksum of the
token stream actually used and every parameter that changes the numbers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, fields

from neuronrank.analysis.neuron_stats import NeuronStats
from neuronrank.config.requests import StatsRequest
from neuronrank.data import stats_cache as store
from neuronrank.data.specs import ModelRef, resolve
from neuronrank.data.text import Corpus, load_corpus
from neuronrank.data.tokens import check_vocab
from neuronrank.engine import distributed, models
from neuronrank.engine.collect import Progress, batched, collect
from neuronrank.engine.windows import calibration_set
from neuronrank.errors import UserError

log = logging.getLogger(__name__)

# calibration fields added after cache entries existed (their default is what those entries were computed with)
ADDED_LATER = ("skip_first",)
_DEFAULTS = {f.name: f.default for f in fields(StatsRequest)}


@dataclass
class StatsResult:
    stats: NeuronStats
    entry: store.Entry
    cached: bool
    seconds: float


def cache_params(req: StatsRequest, ref: ModelRef, corpus: Corpus, tokens_sha256: str) -> dict:
    """The cache key's content: model identity, text identity, the checksum of the token stream
    actually used (a damaged token file can never produce a validly keyed entry) and every knob
    that changes numbers."""
    dtype = models.dtype_name(models.resolve_dtype(req.dtype, models.resolve_device(req.device)))
    p = asdict(req)
    p.pop("device"), p.pop("batch_size")  # do not change the numbers beyond float noise
    for name in ADDED_LATER:  # at its default a later field keeps the keys of entries written before it
        if p.get(name) == _DEFAULTS[name]:
            p.pop(name, None)
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
              recompute: bool = False, device_map=None, stage=None, need_moments: bool = False) -> StatsResult:
    """Cached statistics for `req`, computed once. `bundle` is an already loaded (model, tokenizer);
    `stage(name)` is told each step before it starts (reading the text, loading or converting the
    model, tokenizing, the pass itself through `progress`, writing the entry).

    The key includes the checksum of the (verified) token stream. When an entry with these
    parameters may exist, only the tokenizer is loaded to compute it; the model loads on a miss.
    `need_moments`: the run needs the down_proj input's mean and FLAP's fluctuation; an entry written
    before they were collected is computed again and replaced (every other run keeps using it)."""
    req.validate()
    stage = stage or (lambda name: None)
    t0 = time.perf_counter()
    ref = resolve(req.model)
    stage("reading the calibration text")
    corpus = load_corpus(req.calib, role="calib")
    params = cache_params(req, ref, corpus, tokens_sha256=None)
    tokenizer = windows = None
    if bundle is not None:
        tokenizer = bundle[1]
    elif not recompute and store.has_candidate(params):
        stage("loading the tokenizer")
        tokenizer = models.load_tokenizer(req.model)
    if tokenizer is not None:
        stage("tokenizing the calibration text")
        windows, params["tokens_sha256"] = calibration_set(tokenizer, corpus, req.nsamples, req.seqlen, req.seed)
        entry = None if recompute else store.find_stats(params)
        if entry is not None:
            try:
                stats = store.load_stats(entry)
            except store.CorruptEntry as e:
                log.warning("%s; recomputing", e)
                store.delete_entry(entry.key, missing_ok=True)
            else:
                if not need_moments or stats.has_down_moments:
                    return StatsResult(stats, entry, True, time.perf_counter() - t0)
                log.warning("cache entry %s predates the down_proj input moments (mean, fluctuation); "
                            "computing it again", entry.key)
                store.delete_entry(entry.key, missing_ok=True)
    if bundle is None:
        stage(models.loading_step(ref))
    model, tokenizer = bundle or models.load(req.model, req.device, req.dtype, device_map=device_map)
    models.check_seqlen(model, req.seqlen)
    if windows is None:
        stage("tokenizing the calibration text")
        windows, params["tokens_sha256"] = calibration_set(tokenizer, corpus, req.nsamples, req.seqlen, req.seed)
    check_vocab(windows.flatten().numpy(), models.embedding_rows(model))
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
    models.check_seqlen(model, req.seqlen)
    corpus = load_corpus(req.calib, role="calib")
    windows, _ = calibration_set(tokenizer, corpus, req.nsamples, req.seqlen, req.seed)
    check_vocab(windows.flatten().numpy(), models.embedding_rows(model))
    return windows


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
