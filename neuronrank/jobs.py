"""Runs in worker processes: one heavy run at a time, the rest queued, progress in the run store.

    submit(kind, request) -> run id      queue a run and make sure a dispatcher is alive
    cancel(run_id)                       queued: dropped; running: its process group is terminated
    reap()                               runs marked running whose worker is gone -> failed

The dispatcher (`python -m neuronrank.jobs dispatch`) is a detached process holding an exclusive lock
on `<cache>/dispatcher.lock`; it claims the oldest queued run and runs it in a child worker
(`python -m neuronrank.jobs work ID`, its own process group), so a page reload, a Streamlit restart or
a crash of the caller loses nothing. If the worker dies without recording an outcome (SIGKILL, OOM
killer), the dispatcher marks the run failed with the reason and moves on.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict
from typing import Callable

from neuronrank.errors import UserError
from neuronrank.paths import cache_dir, confine_params
from neuronrank.requests import REQUESTS, from_params
from neuronrank.runs import RunStore

log = logging.getLogger(__name__)


def _job(kind: str) -> Callable:
    from neuronrank import pipeline

    return pipeline.JOB_KINDS[kind]


def _stored(kind: str, req) -> dict:
    """What the run store keeps of a request (or of a dict of its fields): every field, by name."""
    if isinstance(req, dict):
        req = from_params(kind, req)
    if kind not in REQUESTS:
        raise UserError(f"unknown run kind {kind!r}")
    if not isinstance(req, REQUESTS[kind]):
        raise UserError(f"a {kind} run needs a {REQUESTS[kind].__name__}, got {type(req).__name__}")
    return asdict(req.normalized() if hasattr(req, "normalized") else req)


# ----------------------------------------------------------------------------------------------
# progress


class Reporter:
    """Turns stage progress into (fraction, message) rows; writes at most every `interval` seconds."""

    def __init__(self, store: RunStore, run_id: int, interval: float = 0.5):
        self.store, self.run_id, self.interval = store, run_id, interval
        self._last = 0.0

    def __call__(self, fraction: float, message: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.interval:
            self._last = now
            self.store.progress(self.run_id, fraction, message)


# ----------------------------------------------------------------------------------------------
# the public calls


def submit(kind: str, req, group: str | None = None, store: RunStore | None = None,
           start_dispatcher: bool = True) -> int:
    """Queue a run of a validated request. Paths it names must lie inside the allowed folders
    (paths.confine): this is how the app starts runs, and a browser user must not reach arbitrary
    files of the server."""
    params = confine_params(_stored(kind, req))
    store = store or RunStore()
    run_id = store.create(kind, params, group=group)
    if start_dispatcher:
        ensure_dispatcher()
    return run_id


def cancel(run_id: int, store: RunStore | None = None) -> str:
    """Cancel a run; returns the status it ends in."""
    store = store or RunStore()
    run = store.get(run_id)
    if run["status"] == "queued" and store.finish(run_id, "cancelled", only_if=("queued",)):
        return "cancelled"
    run = store.get(run_id)
    if run["status"] == "running":
        store.finish(run_id, "cancelled", error="cancelled by the user", only_if=("running",))
        if run["pid"] and run["origin"] == "app":
            try:
                os.killpg(run["pid"], signal.SIGTERM)  # the worker leads its own process group
            except (ProcessLookupError, PermissionError):
                pass
        return "cancelled"
    return run["status"]


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def reap(store: RunStore | None = None) -> int:
    """Mark runs whose worker process no longer exists as failed. Returns how many."""
    store = store or RunStore()
    n = 0
    for run in store.running():
        if run["pid"] is None and time.time() - (run["started"] or 0) < 120:
            continue  # claimed a moment ago; its worker is starting
        if not _alive(run["pid"]):
            n += store.finish(run["id"], "failed", error="the worker process disappeared (killed or crashed)",
                              only_if=("running",))
    return n


# ----------------------------------------------------------------------------------------------
# dispatcher and worker


def _lock_path():
    return cache_dir() / "dispatcher.lock"


def ensure_dispatcher() -> None:
    """Start a detached dispatcher; if one is already running it exits at once (lock held)."""
    logs = cache_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "dispatcher.log", "ab") as out:
        subprocess.Popen([sys.executable, "-m", "neuronrank.jobs", "dispatch"], stdout=out, stderr=out,
                         stdin=subprocess.DEVNULL, start_new_session=True, env=_child_env())


def _child_env() -> dict:
    # the package is installed (pip install -e .): children import it like any other; they share
    # this process's cache folder
    return {**os.environ, "NEURONRANK_CACHE": str(cache_dir())}


def dispatch() -> None:
    store = RunStore()
    while True:
        with open(_lock_path(), "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another dispatcher serves the queue
            reap(store)
            while (run := store.claim_next(pid=os.getpid())) is not None:
                _run_in_worker(store, run)
        # lock released: a run queued in the meantime would find no dispatcher; look once more
        if store.queued_count() == 0:
            return


def _run_in_worker(store: RunStore, run: dict) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "neuronrank.jobs", "work", str(run["id"])],
                            start_new_session=True, env=_child_env(), stdin=subprocess.DEVNULL)
    store.set_pid(run["id"], proc.pid)
    rc = proc.wait()
    if rc != 0:
        how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
        if store.finish(run["id"], "failed", error=f"the worker process ended with {how}", only_if=("running",)):
            log.warning("run %s: worker ended with %s", run["id"], how)


def execute(run_id: int, store: RunStore | None = None) -> dict | None:
    """Run one claimed run in this process and record its outcome."""
    store = store or RunStore()
    run = store.get(run_id)
    if run["status"] != "running":  # cancelled between the claim and this worker's start
        return None
    report = Reporter(store, run_id)
    try:
        req = from_params(run["kind"], run["params"])
        req.validate()
        result = _job(run["kind"])(req, report)
    except UserError as e:
        store.finish(run_id, "failed", error=str(e), only_if=("running",))
        return None
    except Exception as e:  # a bug: keep the traceback in the log, a readable line in the store
        log.error("run %s failed:\n%s", run_id, traceback.format_exc())
        store.finish(run_id, "failed", error=f"{type(e).__name__}: {e}", only_if=("running",))
        return None
    store.finish(run_id, "done", result=result, only_if=("running",))
    return result


def run_here(kind: str, req, progress: Callable | None = None, group: str | None = None) -> tuple[int, dict]:
    """The CLI's way: record the run in the store, but execute it in this process (no queue).
    A request object has been validated by the caller; a dict of fields is validated here."""
    if isinstance(req, dict):
        req = from_params(kind, req)
        req.validate()
    store = RunStore()
    run_id = store.create(kind, _stored(kind, req), status="running", group=group, origin="cli", pid=os.getpid())
    report = Reporter(store, run_id)

    def both(fraction, message, force=False):
        report(fraction, message, force)
        if progress is not None:
            progress(fraction, message)

    try:
        result = _job(kind)(req, both)
    except BaseException as e:
        status = "cancelled" if isinstance(e, KeyboardInterrupt) else "failed"
        store.finish(run_id, status, error=str(e) or type(e).__name__, only_if=("running",))
        raise
    store.finish(run_id, "done", result=result, only_if=("running",))
    return run_id, result


def _worker_main(run_id: int) -> int:
    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    execute(run_id)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    if sys.argv[1:2] == ["dispatch"]:
        dispatch()
    elif sys.argv[1:2] == ["work"] and len(sys.argv) == 3:
        sys.exit(_worker_main(int(sys.argv[2])))
    else:
        print("usage: python -m neuronrank.jobs dispatch | work RUN_ID", file=sys.stderr)
        sys.exit(2)
