"""The run kinds: what a run of each kind does, from a validated request to a JSON-able result.

    stats   statistics through the cache                        engine/statistics.py
    ppl     perplexity of a model                               evaluation/perplexity.py
    prune   load, (calibrate), evaluate dense (cached), prune, report sparsity, evaluate, save (results,
            masks, model)
    search  an Optuna study over the exponents                  search/study.py
    ablate  load, statistics (cached), zero each role class / its random controls / single neurons and
            measure perplexity, restoring the weights after each   evaluation/ablation.py

The one path the CLI (in process) and the app's workers (queue/jobs.py) share. Each job takes a request
from `neuronrank.config.requests` and a `report(fraction, message, force=False)` callback. This module
loads the torch rooms: the dispatcher imports it only in a worker.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

from neuronrank.config.requests import AblateRequest, PplRequest, PruneRequest, StatsRequest
from neuronrank.data.specs import resolve
from neuronrank.engine import models
from neuronrank.engine.statistics import calibration_windows, get_stats
from neuronrank.errors import UserError
from neuronrank.evaluation import zeroshot
from neuronrank.evaluation.ablation import ablate
from neuronrank.evaluation.perplexity import measure_ppl
from neuronrank.prune import export, prune, sparsity_report
from neuronrank.runs.progress import token_progress
from neuronrank.search.study import run_search

log = logging.getLogger(__name__)


def stats_job(req: StatsRequest, report) -> dict:
    res = get_stats(req, progress=token_progress(report, "statistics", 0.1, 0.88),
                    stage=lambda name: report(0.98 if name.startswith("writing") else 0.02, name, True))
    return {"cache_key": res.entry.key, "cached": res.cached, "seconds": round(res.seconds, 3),
            "tokens": int(res.stats.tokens[0]), "layers": res.stats.n_layers, "width": res.stats.width}


def _on_gpu(model) -> bool:
    return next(model.parameters()).device.type == "cuda"


def _load(req, report):
    """(the model's identity for the dense-ppl cache, model, tokenizer), the loading step reported."""
    ref = resolve(req.model)
    report(0.01, models.loading_step(ref), True)
    identity = ref.identity()
    model, tok = models.load(req.model, req.device, req.dtype)
    return identity, model, tok


def ppl_job(req: PplRequest, report) -> dict:
    identity, model, tok = _load(req, report)
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
    timer = _Timer()
    tasks = manager = None
    if req.eval_tasks:  # a typo in a task name, or a task without its data, must not cost the run
        report(0.0, "zero-shot tasks: checking names and data", True)
        tasks = zeroshot.parse_tasks(req.eval_tasks)
        manager = zeroshot.check_tasks(tasks, req.eval_tasks_path)
        zeroshot.check_data(tasks, manager)
    with timer.stage("load"):
        identity, model, tok = _load(req, report)
        req.check_layers(len(models.decoder_layers(model)))
        if req.save_model and req.compensation == "mean":
            export.check_bias_storable(model)  # before the prune, not after it
        windows = req.eval_window_cap(_on_gpu(model))

    stats, stats_key, calib = None, None, None
    with timer.stage("stats"):
        if req.sequential:  # the windows: each layer is calibrated while pruning
            report(0.05, "calibration windows", True)
            calib = calibration_windows(req.stats_request(), model, tok)
        if req.needs_statistics:  # one-pass statistics of the dense model (also OWL's ratios, compensation)
            sres = get_stats(req.stats_request(), bundle=(model, tok),
                             progress=token_progress(report, "calibration statistics", 0.05, 0.3),
                             stage=lambda name: report(0.05, f"calibration statistics: {name}", True),
                             need_moments=req.needs_down_moments)
            stats, stats_key = sres.stats, sres.entry.key

    with timer.stage("dense_eval"):
        dense, dense_cached = measure_ppl(model, tok, req.eval, req.eval_seqlen, windows, identity,
                                          progress=token_progress(report, "dense perplexity", 0.35, 0.25))

    with timer.stage("prune"):
        report(0.6, "pruning layer by layer" if req.sequential else "pruning", True)
        info = prune(model, req, stats, windows=calib)
        sparsity = sparsity_report(model)

    with timer.stage("eval"):
        pruned, _ = measure_ppl(model, tok, req.eval, req.eval_seqlen, windows, identity, use_cache=False,
                                progress=token_progress(report, "pruned perplexity", 0.62, 0.35))

    zero_shot = zero_shot_failed = None
    if tasks:
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
    if "owl" in info:
        result["owl"] = info["owl"]
    if zero_shot is not None:
        result["zero_shot"] = zero_shot
    if zero_shot_failed is not None:
        result["zero_shot_failed"] = zero_shot_failed
    with timer.stage("save"):
        # a failed write never throws the perplexities away: the run ends done, its result names
        # what was not written and why (the CLI then exits 1 with one error line)
        if req.save_masks:  # before --save_model: slicing a structured model drops the masked neurons
            report(0.98, "saving masks", True)
            try:
                result["saved_masks"] = export.save_masks(model, req.save_masks, info, req)
            except (UserError, OSError) as e:
                result.setdefault("not_written", []).append(_not_written("--save-masks", req.save_masks, e))
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


def ablate_job(req: AblateRequest, report) -> dict:
    """Load once, take the class membership from the cached statistics (computed on a miss), then one
    evaluation per ablation on the dense weights, each restored afterwards."""
    identity, model, tok = _load(req, report)
    blocks = models.mlp_blocks(model)
    req.validate(len(blocks), blocks[0].width)  # bands and neurons against the model, before calibrating
    sres = get_stats(req.stats_request(), bundle=(model, tok),
                     progress=token_progress(report, "calibration statistics", 0.05, 0.15),
                     stage=lambda name: report(0.05, f"calibration statistics: {name}", True))
    return {**ablate(model, tok, req, sres.stats, identity, report), "stats_key": sres.entry.key}


# kind -> job; the request class of each kind is neuronrank.config.requests.REQUESTS[kind]. A search is an
# Optuna study over the exponents (search/study.py); its workers load the model once.
JOB_KINDS = {"stats": stats_job, "prune": prune_job, "ppl": ppl_job, "search": run_search, "ablate": ablate_job}
