"""Search the NeuronRank-OLD exponents with Optuna: which (α, β, γ) prune best, and does that beat Wanda?

    run_search(request, report) -> summary      create or join the study, run its workers, summarise
    open_storage(url) / load_study(name, url)   the relational storage every worker shares
    summary(study) / list_studies(url)          what the CLI and the Search page show

A study lives in Optuna's RDB storage: SQLite in the cache by default, any SQLAlchemy URL otherwise, so
workers on other machines join the same study through a shared database (PostgreSQL). The study
carries its request (`user_attrs["request"]`): a worker needs only the storage URL and the name.

A trial: TPE proposes (α, β, γ) within the ranges; the worker prunes its already loaded model, evaluates
perplexity over growing prefixes of the evaluation windows (W/2^(r-1), ..., W/2, W) and reports the
cumulative ppl after each; Optuna's successive-halving pruner stops the worse half at every rung, so bad
exponents cost a quarter of an evaluation. The objective is the ppl over all W windows: the prune
command's protocol. Then the dense weights are restored from a copy (no reload).

Baselines at the same sparsity and protocol (dense, wanda with its own comparison group, magnitude,
random) are evaluated once per study by the first worker and stored with it (`user_attrs["baselines"]`).

Failure: a worker records `host:pid:start` on each trial. A worker that dies mid-trial leaves its trial
RUNNING; the next worker start (or any sibling, before each trial) on the same host sees the process is
gone and fails it; on other hosts Optuna's heartbeat fails it after the grace period. The study goes on.

This module imports no torch (the app reads studies through it); the model side is search/worker.py.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from neuronrank.analysis.numbers import finite
from neuronrank.config.requests import EXPONENT_LABELS, SearchRequest, check_storage_url
from neuronrank.data.paths import (cache_dir, check_sqlite_once, forget_sqlite_check, open_sqlite, short_hash,
                                   sqlite_lock)
from neuronrank.errors import UserError
from neuronrank.runs.store import process_alive, process_start

log = logging.getLogger(__name__)

PARAMS = tuple(EXPONENT_LABELS)  # alpha, beta, gamma: the trial parameter names
HEARTBEAT_S = 15  # a running trial's heartbeat; other hosts fail it after GRACE_S without one
GRACE_S = 60
MAX_FAILURES = 3  # consecutive failed trials of one worker: a bug or a broken setup, not bad luck
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
ORIGINAL = {"alpha": 1.0, "beta": 1.0, "gamma": 1.0}  # the original method's exponents: trial 0

optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial on stderr is ours to write
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


# ----------------------------------------------------------------------------------------------
# storage


def default_storage() -> str:
    path = cache_dir() / "search" / "studies.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def redact(url: str) -> str:
    """The URL without its password (for output and the page)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001  (never let printing a URL fail)
        return "<storage>"


_STORAGES: dict[tuple, optuna.storages.RDBStorage] = {}
_NOTICES: list[str] = []  # damaged storage files moved aside in this process, for the page to say once


def take_notice() -> str | None:
    """What open_storage had to do to a damaged study storage since the last call (the page shows it)."""
    out = " ".join(_NOTICES) or None
    _NOTICES.clear()
    return out


def _sqlite_file(url: str) -> Path | None:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(os.path.abspath(os.path.expanduser(parsed.database)))


def _check_study_file(path: Path) -> None:
    """Raise sqlite3.DatabaseError when the study storage file is damaged (a missing one is created)."""
    import sqlite3

    if not path.exists() or path.stat().st_size == 0:
        return
    db = sqlite3.connect(path, timeout=60)
    try:
        check_sqlite_once(db, path)
    finally:
        db.close()


def storage_full(e: BaseException) -> bool:
    """Whether an error (or one it was raised from: Optuna wraps SQLAlchemy, which wraps the driver) is a
    full disk: SQLite's SQLITE_FULL, "No space left on device", a server's "disk full"."""
    import errno

    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = str(e).lower()
        if getattr(e, "sqlite_errorcode", None) == 13 or getattr(e, "errno", None) == errno.ENOSPC \
                or "database or disk is full" in text or "no space left on device" in text or "disk full" in text:
            return True
        e = e.__cause__ or e.__context__
    return False


def _first_cause(e: BaseException) -> str:
    """The innermost message of an error chain, one line (the driver's words, not Optuna's wrapper's)."""
    seen, last = set(), e
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        last = e
        e = e.__cause__ or e.__context__
    text = str(last).strip().splitlines()
    return text[0] if text else type(last).__name__


@contextlib.contextmanager
def storage_errors(url: str | None = None):
    """Storage trouble met while a study is read or written, as one UserError: a full disk ("disk full"),
    a file damaged while in use (checked, and moved aside, the next time it is opened)."""
    import sqlalchemy.exc

    try:
        yield
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
        url = (url or "").strip() or default_storage()
        if storage_full(e):
            raise UserError(f"disk full: the study storage {redact(url)} cannot be written ({_first_cause(e)}); "
                            "the study keeps its finished trials") from e
        path = _sqlite_file(url)
        root = str(_root(e)).lower()
        if path is not None and any(w in root for w in ("malformed", "not a database", "corrupt")):
            forget_sqlite_check(path)
            for key in [k for k in _STORAGES if k[0] == url]:
                del _STORAGES[key]
            raise UserError(f"the study storage {redact(url)} is damaged ({_first_cause(e)}); it is moved aside "
                            "the next time it is opened") from e
        raise UserError(f"the study storage {redact(url)} cannot be read or written: {_first_cause(e)}") from e


def _root(e: BaseException) -> BaseException:
    seen = set()
    while (e.__cause__ or e.__context__) is not None and id(e) not in seen:
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return e


def open_storage(url: str | None = None, heartbeat: bool = True) -> optuna.storages.RDBStorage:
    """The study storage at `url` (default: the cache's SQLite file); a bad URL, a missing driver or a
    database that does not answer is one UserError. Opened once per process and URL."""
    url = (url or "").strip() or default_storage()
    key = (url, heartbeat)
    if key in _STORAGES:
        return _STORAGES[key]
    check_storage_url(url)
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    parsed = make_url(url)
    engine = {}
    if parsed.get_backend_name() == "sqlite":
        folder = os.path.dirname(os.path.abspath(os.path.expanduser(parsed.database)))
        if not os.path.isdir(folder):
            raise UserError(f"storage {redact(url)}: folder {folder} does not exist")
        engine = {"connect_args": {"timeout": 60}}  # several workers write one file
    path = _sqlite_file(url)
    if path is not None:  # as the run store: a damaged file is moved aside, one warning, a fresh one
        notice = open_sqlite(path, lambda: _check_study_file(path), "study storage")
        if notice:
            _NOTICES.append(notice)
    beat = dict(heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S) if heartbeat else {}
    try:
        # Optuna creates the tables of a fresh file: two processes doing it at once collide ("table ...
        # already exists"), so SQLite storages open one at a time
        with warnings.catch_warnings(), (sqlite_lock(path) if path is not None else contextlib.nullcontext()):
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat (since 2.9)
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine, **beat)
    except ImportError as e:
        missing = getattr(e.__cause__, "name", None) or getattr(e, "name", None)
        raise UserError(f"storage {redact(url)}: its database driver is not installed"
                        + (f" (no module {missing!r})" if missing else "")) from e
    except (SQLAlchemyError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"storage {redact(url)} cannot be opened: {first}") from e
    _STORAGES[key] = storage
    return storage


def study_name(req: SearchRequest) -> str:
    """The given name, else one derived from the protocol: the same command resumes the same study."""
    if req.study:
        return req.study
    return f"{req.sparsity_type.replace(':', 'of')}-{req.sparsity_ratio:g}-{short_hash(req.protocol())[:8]}"


class NoStudy(UserError):
    """The storage holds no study of that name (yet: a queued search creates it when its worker starts)."""


def load_study(name: str, url: str | None = None, sampler=None, pruner=None, heartbeat: bool = False) -> optuna.Study:
    try:
        with storage_errors(url):
            return optuna.load_study(study_name=name, storage=open_storage(url, heartbeat), sampler=sampler,
                                     pruner=pruner)
    except KeyError as e:
        raise NoStudy(f"no study named {name!r} in {redact(url or default_storage())}") from e


def stored_request(study: optuna.Study) -> SearchRequest:
    params = dict(study.user_attrs.get("request") or {})
    if not params:
        raise UserError(f"study {study.study_name!r} was not made by neuronrank search (no request stored)")
    for name in PARAMS:
        params[f"{name}_range"] = tuple(params[f"{name}_range"])
    if params.get("owl_lambda_range") is not None:
        params["owl_lambda_range"] = tuple(params["owl_lambda_range"])
    return SearchRequest(**params)


READY_WAIT_S = 60  # a joiner waits this long for the creator to store the study's request


def create_or_join(req: SearchRequest, storage) -> optuna.Study:
    """The study of `req`: created with its request stored and the original exponents enqueued as the
    first trial, or joined when it exists (its protocol must be this request's). Creation is decided by
    the storage (a study name is unique): of coordinators that start together exactly one creates the
    study and enqueues the original exponents; the others wait until its protocol is stored, then join."""
    name = study_name(req)
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="minimize")
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        deadline = time.monotonic() + READY_WAIT_S
        while "protocol" not in study.user_attrs and time.monotonic() < deadline:
            time.sleep(0.1)  # its creator is storing the request (the protocol goes last)
        _check_same_protocol(study, req)
        return study
    study.set_user_attr("request", _jsonable(asdict(replace(req, study=name, storage=None))))
    if all(lo <= ORIGINAL[n] <= hi for n, (lo, hi) in ((n, req.range(n)) for n in PARAMS)):
        study.enqueue_trial(dict(ORIGINAL), user_attrs={"enqueued": "original exponents"})
    study.set_user_attr("created", time.time())
    study.set_user_attr("protocol", _jsonable(req.protocol()))  # last: joiners wait for it
    return study


def _check_same_protocol(study: optuna.Study, req: SearchRequest) -> None:
    stored = study.user_attrs.get("protocol")
    if stored is None:
        raise UserError(f"study {study.study_name!r} exists but was not made by neuronrank search")
    mine = _jsonable(req.protocol())
    differ = [k for k in sorted(set(stored) | set(mine))
              if stored.get(k) != mine.get(k) and not (k == "eval_windows" and mine.get(k) is None)]
    if differ:
        shown = ", ".join(f"{k}={stored.get(k)!r} (not {mine.get(k)!r})" for k in differ[:4])
        raise UserError(f"study {study.study_name!r} was created with other settings: {shown}; "
                        "give another --study name or the same settings")


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------------------------
# sampler, pruner, chunks


def chunk_sizes(rungs: int, windows: int) -> list[int]:
    """Cumulative window counts after which a trial reports: W/2^(r-1), ..., W/2, W (at least 1)."""
    return sorted({max(1, windows >> (rungs - 1 - i)) for i in range(rungs)})


def _tpe(req: SearchRequest, seed: int) -> optuna.samplers.TPESampler:
    # multivariate: α, β and γ interact (only their ratios matter to the ranking within a layer);
    # constant_liar: parallel workers do not all propose the same point
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(3, min(10, req.trials // 4)),
                                      multivariate=True, constant_liar=True)


class WorkerSampler(optuna.samplers.BaseSampler):
    """One worker's TPE sampler, seeded when the worker asks its first trial: --seed + 1 + that trial's
    number. The storage hands out trial numbers atomically, so workers and coordinators that start
    together, or join later, never share a random stream (they would propose the same points); one worker
    on a fresh study starts at trial 0 and is reproducible (seed --seed + 1, as before this rule)."""

    def __init__(self, req: SearchRequest, seed: int):
        self._req, self._base, self._inner = req, int(seed), None
        self.seed: int | None = None

    def before_trial(self, study, trial) -> None:
        if self._inner is None:
            self.seed = (self._base + 1 + trial.number) % (2**31 - 1)
            self._inner = _tpe(self._req, self.seed)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        if self._inner is not None:  # None: an orphan of another worker told FAIL before this one asked
            self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        if self._inner is not None:
            self._inner.reseed_rng()


def make_sampler(req: SearchRequest, seed: int) -> optuna.samplers.BaseSampler:
    return WorkerSampler(req, seed)


def make_pruner(chunks: list[int]) -> optuna.pruners.BasePruner:
    if len(chunks) < 2:
        return optuna.pruners.NopPruner()
    # rungs at chunks[0] * 2^k windows: the reported steps; the better half goes on at each
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=chunks[0], reduction_factor=2)


# ----------------------------------------------------------------------------------------------
# the objective and one worker's loop


def worker_ident() -> str:
    """host:pid:start — the start time tells a reused pid from the worker that held it."""
    start = process_start(os.getpid())
    return f"{socket.gethostname()}:{os.getpid()}:{'?' if start is None else start}"


def _worker_alive(ident: str) -> bool:
    """Whether the worker `ident` runs; on another host we cannot tell (the heartbeat decides there)."""
    try:
        host, pid, start = ident.rsplit(":", 2)
        pid, start = int(pid), None if start == "?" else int(start)
    except ValueError:
        return True
    if host != socket.gethostname():
        return True
    return process_alive(pid, start)


def fail_orphans(study: optuna.Study, only: str | None = None, trials: list | None = None,
                 say: bool = True) -> list[int]:
    """Fail RUNNING trials whose worker on this host is gone (or, with `only`, those of that worker).
    `trials`: a snapshot just read; `say`: log each (False where an error line says it). Returns their
    numbers."""
    failed = []
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    for t in (t for t in trials if t.state == TrialState.RUNNING):
        owner = t.user_attrs.get("worker")
        if owner is None or (owner != only if only else _worker_alive(owner)):
            continue
        try:
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        except (ValueError, RuntimeError) as e:  # finished or vanished meanwhile
            log.debug("trial %s: %s", t.number, e)
            continue
        failed.append(t.number)
        if say:
            log.warning("trial %d of worker %s failed: the worker %s", t.number, owner,
                        "stopped" if only else "is gone (killed or crashed)")
    return failed


def make_objective(req: SearchRequest, evaluator, chunks: list[int], ident: str,
                   on_chunk: Callable | None = None) -> Callable:
    """The trial: suggest, prune, evaluate chunk by chunk (reporting), restore. Timings go into the
    trial's `timing` attribute: overhead = everything in the trial but the evaluation itself; between =
    from the previous trial's end to this one's start (telling the result, the next ask, bookkeeping)."""
    last = {"end": None}

    def objective(trial: optuna.Trial) -> float:
        t0 = time.perf_counter()
        between = None if last["end"] is None else t0 - last["end"]
        trial.set_user_attr("worker", ident)
        exps = {n: trial.suggest_float(n, *req.range(n)) for n in req.params}  # α, β, γ (and OWL's λ)
        t1 = time.perf_counter()
        value, upto, stopped, eval_s = math.nan, 0, False, 0.0
        try:
            evaluator.prune(**exps)
            t2 = time.perf_counter()
            for i, upto in enumerate(chunks):
                te = time.perf_counter()
                value = evaluator.evaluate(upto)
                eval_s += time.perf_counter() - te
                if math.isnan(value):  # broken numerics are as bad as it gets
                    value = math.inf
                trial.report(value, upto)
                if on_chunk is not None:
                    on_chunk(trial.number, upto, value)
                if i + 1 < len(chunks) and trial.should_prune():
                    stopped = True
                    break
        finally:
            tr = time.perf_counter()
            evaluator.restore()
            t3 = time.perf_counter()
        total = t3 - t0
        trial.set_user_attr("timing", {
            "total": round(total, 4), "eval": round(eval_s, 4), "overhead": round(total - eval_s, 4),
            "suggest": round(t1 - t0, 4), "prune": round(t2 - t1, 4), "restore": round(t3 - tr, 4),
            "between": None if between is None else round(between, 4), "windows": upto})
        last["end"] = time.perf_counter()
        if stopped:
            raise optuna.TrialPruned(f"ppl {value:.4g} after {upto} windows")
        return value

    return objective


def counts(study: optuna.Study, trials: list | None = None) -> dict[str, int]:
    out = {s.name.lower(): 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False) if trials is None else trials:
        out[t.state.name.lower()] += 1
    out["finished"] = out["complete"] + out["pruned"]
    return out


def work(study: optuna.Study, evaluator, report: Callable | None = None, baselines: bool = True,
         trials: int | None = None) -> int:
    """One worker's loop on `study` (already built with this worker's sampler and pruner): baselines if
    the study has none, then trials until the study holds `trials` finished (complete or pruned) ones —
    the command's --trials (default: the stored request's), so a finished study resumed with a larger
    --trials runs the missing ones. Returns how many trials this worker ran. A full disk ends it with one
    UserError ("disk full"), its running trial marked FAIL."""
    req = stored_request(study)
    if trials is not None:
        req = replace(req, trials=int(trials))
    ident = worker_ident()
    chunks = chunk_sizes(req.rungs, evaluator.windows)
    report = report or (lambda *a, **k: None)
    if baselines and "baselines" not in study.user_attrs:
        study.set_user_attr("baselines", evaluator.baselines(report))
    if "evaluation" not in study.user_attrs:
        study.set_user_attr("evaluation", {**evaluator.protocol, "chunks": chunks})

    done = {"fraction": 0.0}

    def on_chunk(number, upto, value):  # no storage read here: it would count as trial overhead
        report(done["fraction"], f"search: trial {number}, {upto}/{chunks[-1]} windows, ppl {value:.3f}")

    objective = make_objective(req, evaluator, chunks, ident, on_chunk)
    ran, failures = 0, 0
    try:
        while True:
            trials = study.get_trials(deepcopy=False)  # one read per trial serves all the bookkeeping
            fail_orphans(study, trials=trials)
            c = counts(study, trials)
            done["fraction"] = min(1.0, c["finished"] / max(req.trials, 1))
            report(done["fraction"], "search: " + _progress_line(trials, req), True)
            if c["finished"] + c["running"] >= req.trials:
                break
            try:
                study.optimize(objective, n_trials=1, catch=(), gc_after_trial=False)
                failures = 0
            except UserError:
                raise
            except Exception as e:  # noqa: BLE001  (the trial is FAILED in the study; retry a few times)
                if storage_full(e):
                    raise UserError(f"disk full: the study storage cannot be written ({_first_cause(e)}); the "
                                    "study keeps its finished trials, the running one is marked failed") from e
                failures += 1
                log.warning("trial failed (%d in a row): %s: %s", failures, type(e).__name__, e)
                if failures >= MAX_FAILURES:
                    raise
            ran += 1
    finally:
        _fail_own_trials(study, ident)  # stopped (SIGTERM, Ctrl-C, a full disk) mid-trial: that trial failed
    return ran


def _fail_own_trials(study: optuna.Study, ident: str) -> None:
    """fail_orphans(only=ident), also on a full disk: SQLite's rollback journal needs free space even to
    change a trial's state in place, so the FAIL is written through a connection that keeps its journal
    in memory (one small update; the file does not grow)."""
    try:
        fail_orphans(study, only=ident)
        return
    except Exception as e:  # noqa: BLE001
        if not storage_full(e):
            log.warning("could not mark this worker's running trial failed: %s", _first_cause(e))
            return
    url = getattr(getattr(study, "_storage", None), "url", None) or \
        getattr(getattr(getattr(study, "_storage", None), "_backend", None), "url", None)
    if not url or _sqlite_file(url) is None:
        log.warning("the disk is full: this worker's running trial stays RUNNING until the next worker starts")
        return
    from sqlalchemy import event

    storage = optuna.storages.RDBStorage(url, skip_compatibility_check=True, skip_table_creation=True,
                                         engine_kwargs={"connect_args": {"timeout": 60}})

    @event.listens_for(storage.engine, "connect")
    def _journal_in_memory(dbapi_connection, record):
        dbapi_connection.execute("PRAGMA journal_mode=MEMORY")

    storage.engine.dispose()  # connections opened before the listener would keep a file journal
    try:  # the error line ("disk full: ... the running one is marked failed") says it
        fail_orphans(optuna.load_study(study_name=study.study_name, storage=storage), only=ident, say=False)
    except Exception as e:  # noqa: BLE001
        log.warning("the disk is full and this worker's running trial could not be marked failed: %s",
                    _first_cause(e))
    finally:
        storage.engine.dispose()


def _progress_line(trials: list, req) -> str:
    c = counts(None, trials)
    best = best_trial(None, trials)
    text = f"{c['finished']}/{req.trials} trials ({c['pruned']} stopped early)"
    if best is not None:
        text += (f", best ppl {best.value:.3f} at α={best.params['alpha']:.3f} β={best.params['beta']:.3f} "
                 f"γ={best.params['gamma']:.3f}")
    return text


def best_trial(study: optuna.Study | None, trials: list | None = None):
    """The complete trial of lowest ppl (the lowest number among equals), or None."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return min(done, key=lambda t: (t.value, t.number)) if done else None


# ----------------------------------------------------------------------------------------------
# the coordinator: create or join, run K workers, summarise


def _model_evaluator(req: SearchRequest, report=None):
    from neuronrank.search.worker import ModelEvaluator

    return ModelEvaluator(req, report)


def resolve_request(req: SearchRequest) -> SearchRequest:
    """Fix what depends on this machine before the study stores it: the evaluation window cap
    (default 16 on a CPU, all on a GPU) becomes a number (0 = all)."""
    if req.eval_windows is not None:
        return req
    from neuronrank.engine import models

    on_gpu = models.resolve_device(req.device).type == "cuda"
    cap = req.eval_window_cap(on_gpu)
    return replace(req, eval_windows=0 if cap is None else cap)


def gpu_count(req: SearchRequest) -> int:
    from neuronrank.engine import models

    if models.resolve_device(req.device).type != "cuda":
        return 0
    import torch

    return torch.cuda.device_count()


def run_search(req: SearchRequest, report: Callable | None = None, evaluator_factory: Callable | None = None) -> dict:
    """Create or join the study of `req`, run `req.workers` workers on it here, and summarise."""
    t0 = time.perf_counter()
    report = report or (lambda *a, **k: None)
    req.validate()
    req = replace(req, study=study_name(req))  # named before machine-dependent defaults are fixed
    url = (req.storage or "").strip() or default_storage()
    storage = open_storage(url)
    gpus = gpu_count(req) if req.workers > 1 and evaluator_factory is None else 0
    if gpus and req.workers > gpus:
        raise UserError(f"--workers {req.workers} needs as many GPUs; this machine has {gpus}")
    with storage_errors(url):  # a full disk or a file damaged in use: one line, not a traceback
        study = create_or_join(resolve_request(req), storage)
        name = study.study_name
        report(0.0, f"search: study {name} in {redact(url)}", True)
        if counts(study)["finished"] >= req.trials:
            pass  # as many finished trials as asked for: the same command shows the result again
        elif req.workers == 1:
            local = replace(stored_request(study), device=req.device, trials=req.trials)
            evaluator = (evaluator_factory or _model_evaluator)(local, report)
            worker_study = optuna.load_study(study_name=name, storage=storage,
                                             sampler=make_sampler(local, local.seed),
                                             pruner=make_pruner(chunk_sizes(local.rungs, evaluator.windows)))
            work(worker_study, evaluator, report, trials=req.trials)
        else:
            _run_workers(name, url, req, gpus, report)
        out = summary(optuna.load_study(study_name=name, storage=storage))
    out["storage"] = redact(url)
    out["wall_seconds"] = round(time.perf_counter() - t0, 3)
    return out


def _run_workers(name: str, url: str, req: SearchRequest, gpus: int, report) -> None:
    """K worker processes (`python -m neuronrank.search.study work`), one per GPU when there are GPUs; they are
    in this process's group, so cancelling the run stops them too."""
    procs = []
    cpu_threads = max(1, (os.cpu_count() or 1) // req.workers)
    for i in range(req.workers):
        env = {**os.environ, "NEURONRANK_SEARCH_STORAGE": url, "NEURONRANK_CACHE": str(cache_dir())}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(i)
        else:
            env["NEURONRANK_THREADS"] = str(cpu_threads)
        cmd = [sys.executable, "-m", "neuronrank.search.study", "work", name, "--index", str(i),
               "--device", "cuda" if gpus else req.device, "--trials", str(req.trials)]
        procs.append(subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL))
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(1.0)
            try:
                study = load_study(name, url)
                trials = study.get_trials(deepcopy=False)
                report(min(1.0, counts(None, trials)["finished"] / req.trials), "search: " + _progress_line(trials, req),
                       True)
            except UserError:
                pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait()
    bad = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
    if bad and len(bad) == len(procs):
        raise RuntimeError("every search worker failed: " + ", ".join(f"worker {i} exit {rc}" for i, rc in bad))
    for i, rc in bad:
        log.warning("search worker %d ended with exit code %d", i, rc)


def worker_main(argv: list[str]) -> int:
    """`python -m neuronrank.search.study work NAME --index I [--device D]` (storage URL in the environment,
    so a password never shows in the process list)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m neuronrank.search.study")
    p.add_argument("command", choices=["work"])
    p.add_argument("study")
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--trials", type=int, default=None, help="finished trials to aim for (default: the study's)")
    args = p.parse_args(argv)

    def on_term(signum, frame):
        raise SystemExit(128 + signum)  # unwinds through work(): its running trial is failed

    signal.signal(signal.SIGTERM, on_term)
    threads = os.environ.get("NEURONRANK_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    url = os.environ.get("NEURONRANK_SEARCH_STORAGE") or default_storage()
    try:
        study = load_study(args.study, url, heartbeat=True)
        req = replace(stored_request(study), device=args.device)
        if args.trials is not None:
            req = replace(req, trials=args.trials)
        evaluator = _model_evaluator(req)
        study = load_study(args.study, url, heartbeat=True, sampler=make_sampler(req, req.seed),
                           pruner=make_pruner(chunk_sizes(req.rungs, evaluator.windows)))
        with storage_errors(url):
            work(study, evaluator, baselines=args.index == 0, trials=req.trials)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


# ----------------------------------------------------------------------------------------------
# what the CLI and the page show


def summary(study: optuna.Study) -> dict:
    """Best trial, counts, baselines, protocol and timings of a study (JSON-able)."""
    trials = study.get_trials(deepcopy=False)
    c = counts(study)
    best = best_trial(study)
    timing = [t.user_attrs["timing"] for t in trials if t.state in FINISHED and "timing" in t.user_attrs]
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    attrs = study.user_attrs
    out = {
        "study": study.study_name,
        "best": None if best is None else {"trial": best.number, "ppl": finite(best.value),
                                           **{n: best.params[n] for n in PARAMS},
                                           **({"owl_lambda": best.params["owl_lambda"]}
                                              if "owl_lambda" in best.params else {})},
        "trials": c["finished"], "complete": c["complete"], "pruned": c["pruned"], "failed": c["fail"],
        "running": c["running"],
        "baselines": attrs.get("baselines"), "evaluation": attrs.get("evaluation"),
        "protocol": attrs.get("protocol"),
        "trials_seconds": round((max(ends) - min(starts)).total_seconds(), 3) if starts and ends else None,
        "per_trial": _timing_summary(timing),
    }
    return out


def _timing_summary(timing: list[dict]) -> dict | None:
    if not timing:
        return None
    med = {k: round(statistics.median(t[k] for t in timing), 4) for k in ("total", "eval", "overhead", "prune",
                                                                          "restore", "suggest")}
    gaps = [t["between"] for t in timing if t.get("between") is not None]
    med["between"] = round(statistics.median(gaps), 4) if gaps else None
    # all a trial costs beyond evaluating: in the trial, plus the bookkeeping before the next one
    full = [t["overhead"] + (t.get("between") or 0.0) for t in timing]
    return {"median": med, "overhead_with_between_median": round(statistics.median(full), 4),
            "overhead_mean": round(statistics.fmean(full), 4), "trials": len(timing)}


def trials_frame(study: optuna.Study):
    """One row per trial: number, state, α, β, γ, ppl, windows evaluated, seconds, worker."""
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        tm = t.user_attrs.get("timing", {})
        value = t.value if t.state == TrialState.COMPLETE else (
            t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
        rows.append({"trial": t.number, "state": t.state.name.lower(),
                     **{n: t.params.get(n) for n in PARAMS}, "owl_lambda": t.params.get("owl_lambda"),
                     "ppl": value, "windows": tm.get("windows"),
                     "seconds": tm.get("total"), "overhead_s": tm.get("overhead"),
                     "worker": t.user_attrs.get("worker")})
    frame = pd.DataFrame(rows, columns=["trial", "state", *PARAMS, "owl_lambda", "ppl", "windows", "seconds",
                                        "overhead_s", "worker"])
    if frame["owl_lambda"].isna().all():  # λ was not searched
        frame = frame.drop(columns="owl_lambda")
    return frame


def trial_samples(study: optuna.Study, trials: list | None = None) -> list[dict]:
    """The finished trials' measured costs ({"eval", "windows", "overhead"}): what views.studies.rates reads
    for the time a study still needs."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    out = []
    for t in trials:
        tm = t.user_attrs.get("timing") if t.state in FINISHED else None
        if tm and tm.get("windows"):
            out.append({"eval": tm.get("eval"), "windows": tm.get("windows"),
                        "overhead": (tm.get("overhead") or 0.0) + (tm.get("between") or 0.0)})
    return out


def past_samples(match: dict, url: str | None = None, studies: int = 5) -> tuple[list[dict], str | None]:
    """Measured trials of the newest `studies` studies whose protocol agrees with `match` on every key
    given (e.g. model, sparsity_type, eval_seqlen) -> (samples, the newest such study's name)."""
    storage = open_storage(url, heartbeat=False)
    with storage_errors(url):
        summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    same = [s for s in summaries if all((s.user_attrs.get("protocol") or {}).get(k) == v for k, v in match.items())]
    same.sort(key=lambda s: -(s.user_attrs.get("created") or (s.datetime_start.timestamp() if s.datetime_start else 0)))
    out = []
    for s in same[:studies]:
        with storage_errors(url):
            out += trial_samples(optuna.load_study(study_name=s.study_name, storage=storage))
    return out, (same[0].study_name if same else None)


def list_studies(url: str | None = None) -> list[dict]:
    """Every study in the storage, newest first: name, setting, trials, best."""
    storage = open_storage(url, heartbeat=False)
    out = []
    with storage_errors(url):
        summaries = optuna.get_all_study_summaries(storage, include_best_trial=True)
    for s in summaries:
        proto = s.user_attrs.get("protocol") or {}
        bt = s.best_trial
        out.append({"study": s.study_name, "sparsity_type": proto.get("sparsity_type"),
                    "ratio": proto.get("sparsity_ratio"), "trials": s.n_trials,
                    "best_ppl": None if bt is None else finite(bt.value),
                    **{n: None if bt is None else bt.params.get(n) for n in PARAMS},
                    "wanda_ppl": ((s.user_attrs.get("baselines") or {}).get("wanda") or {}).get("ppl"),
                    "created": s.user_attrs.get("created") or (s.datetime_start.timestamp() if s.datetime_start else 0)})
    return sorted(out, key=lambda r: -(r["created"] or 0))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass
    sys.exit(worker_main(sys.argv[1:]))
