"""The model side of a search worker: load once, prune in place, evaluate in chunks, restore.

A trial must not pay for a model load (2-17 s here, minutes for a 7B model): the worker keeps a copy of
the weights pruning can touch (the MLP projections of the pruned layers, plus attention with
--targets all) and copies them back after each trial. Statistics come from the cache
(`engine.statistics.get_stats`, computed once per calibration setting), evaluation windows are tokenized
once. NeuronRank-OLD's trials take their masks from the sorted dense |W| (prune/incremental.py), built
once here.
"""

from __future__ import annotations

import logging
import time

import torch

from neuronrank.analysis.numbers import finite, ppl_from_nll
from neuronrank.config.requests import SearchRequest
from neuronrank.data.specs import resolve
from neuronrank.engine import models
from neuronrank.engine.statistics import calibration_windows, get_stats
from neuronrank.engine.windows import evaluation_set
from neuronrank.evaluation.perplexity import measure_ppl, perplexity
from neuronrank.prune import prune
from neuronrank.prune.context import targets
from neuronrank.prune.incremental import ScaledMasks
from neuronrank.runs.progress import token_progress

log = logging.getLogger(__name__)

# the baselines of every study: method -> the fields it differs in (wanda keeps its own comparison
# group, per output row, as in its paper; the others their per-matrix threshold)
BASELINES = {"wanda": {"prune_method": "wanda", "group": "row"},
             "magnitude": {"prune_method": "magnitude", "group": "matrix"},
             "random": {"prune_method": "random", "group": "matrix"}}


class ModelEvaluator:
    """prune(alpha, beta, gamma) -> evaluate(upto) ... -> restore(); `windows` is W, `protocol` says what
    the perplexity is measured on."""

    def __init__(self, req: SearchRequest, report=None):
        report = report or (lambda *a, **k: None)
        self.req = req
        report(0.0, "search: loading model", True)
        t0 = time.perf_counter()
        self.identity = resolve(req.model).identity()
        self.model, self.tokenizer = models.load(req.model, req.device, req.dtype)
        n_layers = len(models.decoder_layers(self.model))
        req.check_layers(n_layers)
        self.stats = self.calib = None
        if req.sequential:  # layer by layer in every trial (and baseline): the windows, tokenized once
            report(0.0, "search: calibration windows", True)
            self.calib = calibration_windows(req.stats_request(), self.model, self.tokenizer)
        if req.needs_statistics:  # one-pass (also OWL's ratios and mean compensation in a sequential study)
            self.stats = get_stats(req.stats_request(), bundle=(self.model, self.tokenizer),
                                   progress=token_progress(report, "calibration statistics"),
                                   need_moments=req.needs_down_moments).stats
        models.check_seqlen(self.model, req.eval_seqlen)
        cap = req.eval_windows if req.eval_windows else None  # the study stores a number; 0 = all
        self.win, corpus = evaluation_set(self.tokenizer, req.eval, req.eval_seqlen, cap)
        self.windows = int(self.win.shape[0])
        self.protocol = {"source": req.eval, "seqlen": req.eval_seqlen, "windows": self.windows,
                         "tokens": self.windows * (req.eval_seqlen - 1)}
        pruned = targets(self.model, req.pruned_layers(n_layers), req.targets)
        self._saved = self._snapshot(pruned)
        # the trials' masks from the sorted lines of the dense |W| (NeuronRank-OLD's metric scales them)
        self._prepared = ScaledMasks.build(pruned, req.prune_request(1.0, 1.0, 1.0))
        self._dirty = False
        self._reset_sum()
        self.setup_seconds = time.perf_counter() - t0
        log.info("search worker ready in %.1fs: %d evaluation windows, %d tensors saved", self.setup_seconds,
                 self.windows, len(self._saved))

    # -- weights -------------------------------------------------------------------------------

    @torch.no_grad()
    def _snapshot(self, targets) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(parameter, copy) for every tensor pruning may change; the copy stays on the parameter's
        device when it fits (a restore is then a device-local copy), else in CPU memory."""
        out = []
        self._no_bias = [t.module for t in targets if t.module.bias is None]  # mean compensation adds one
        for t in targets:
            for p in (t.module.weight, t.module.bias):
                if p is None:
                    continue
                try:
                    copy = p.detach().clone()
                except torch.OutOfMemoryError:
                    copy = p.detach().to("cpu", copy=True)
                out.append((p, copy))
        return out

    @torch.no_grad()
    def restore(self) -> None:
        if self._dirty:
            for p, copy in self._saved:
                p.copy_(copy, non_blocking=True)
            for module in self._no_bias:
                module.bias = None
            if self._saved and self._saved[0][0].device.type == "cuda":
                torch.cuda.synchronize()
            self._dirty = False
        self._reset_sum()

    def prune(self, alpha: float, beta: float, gamma: float, **over) -> dict:
        """Prune with these exponents (and `over`: other fields, OWL's searched λ) after restoring."""
        self.restore()
        self._dirty = True
        return prune(self.model, self.req.prune_request(alpha, beta, gamma, **over), self.stats, windows=self.calib,
                     prepared=self._prepared)

    # -- perplexity over growing prefixes ------------------------------------------------------

    def _reset_sum(self) -> None:
        self._done, self._nll, self._tokens = 0, 0.0, 0

    def evaluate(self, upto: int) -> float:
        """Perplexity over windows [0, upto), continuing from the previous call (only new windows run)."""
        upto = min(int(upto), self.windows)
        if upto > self._done:
            part = perplexity(self.model, self.win[self._done:upto])
            self._nll += part.nll
            self._tokens += part.tokens
            self._done = upto
        return ppl_from_nll(self._nll, max(self._tokens, 1))

    # -- once per study --------------------------------------------------------------------------

    def baselines(self, report=None) -> dict:
        """Dense and the baseline methods at the study's sparsity and protocol (all W windows)."""
        report = report or (lambda *a, **k: None)
        out = {}
        report(0.0, "baselines: dense", True)
        t0 = time.perf_counter()
        self.restore()
        cap = self.windows
        dense, _ = measure_ppl(self.model, self.tokenizer, self.req.eval, self.req.eval_seqlen, cap, self.identity)
        out["dense"] = {"ppl": finite(dense.ppl), "seconds": round(time.perf_counter() - t0, 3)}
        for name, over in BASELINES.items():
            if name == "wanda" and self.req.sparsity_type == "structured":
                over = {**over, "group": "matrix"}  # structured wanda is FLAP's neuron score; no group
            report(0.0, f"baselines: {name}", True)
            t0 = time.perf_counter()
            self.prune(1.0, 1.0, 1.0, **over)
            ppl = self.evaluate(self.windows)
            self.restore()
            out[name] = {"ppl": finite(ppl), "group": over["group"], "seconds": round(time.perf_counter() - t0, 3)}
            log.info("baseline %s: ppl %.3f", name, ppl)
        return out
