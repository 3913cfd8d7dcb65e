"""Runs in worker processes: as many at once as there are devices (slots), the rest queued,
progress in the run store.

    submit(kind, request) -> run id      queue a run and make sure a dispatcher is alive
    reuse_or_submit(kind, request)       an identical run already measured (or under way), else submit
    submit_sweep(sweep, x, y)            a two-exponent landscape: its axes stored, identical cells reused
    recover()                            whoever looks at the queue: restart a dispatcher if runs wait
    cancel(run_id)                       queued: dropped; running: its process group is terminated
    reap()                               runs marked running whose process is gone -> failed

The dispatcher (`python -m neuronrank.queue.jobs dispatch`) is a detached process holding an exclusive
flock on `<cache>/dispatcher.lock`: one at a time. The lock is taken by the process that starts it
(submit, recover) and handed over as an inherited file descriptor, so sixteen concurrent submits start
one dispatcher, not sixteen. It claims queued runs into free slots and runs each in a child worker
(`python -m neuronrank.queue.jobs work ID`, its own process group, `CUDA_VISIBLE_DEVICES` = its slot's GPU),
so a page reload, a Streamlit restart or a crash of the caller loses nothing. Slots: one per CUDA
device (counted from CUDA_VISIBLE_DEVICES, /proc/driver/nvidia/gpus or `nvidia-smi -L`, never by
importing torch), one on a CPU; `NEURONRANK_SLOTS=N` overrides. If a worker dies without recording an
outcome (SIGKILL, OOM killer), the dispatcher marks the run failed with the signal and moves on; if the
dispatcher itself is killed, its workers finish on their own and the next look at the queue (a page's
poll, the CLI) starts a new dispatcher for what is still queued.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import subprocess
import threading
import sys
import time
import traceback
from dataclasses import asdict
from typing import Callable

from neuronrank.config.fields import path_fields
from neuronrank.config.requests import REQUESTS, from_params
from neuronrank.data.inputs import confine_params
from neuronrank.data.paths import cache_dir
from neuronrank.errors import Terminated, UserError, raise_on_sigterm
from neuronrank.runs.store import RunStore, process_alive

log = logging.getLogger(__name__)


def _job(kind: str) -> Callable:
    from neuronrank.queue.kinds import JOB_KINDS  # loads the torch rooms: in a worker (or the CLI) only

    return JOB_KINDS[kind]


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
           start_dispatcher: bool = True, meta: dict | None = None) -> int:
    """Queue a run of a validated request. Every path it names (its request's path fields) must lie
    inside the allowed folders (data.inputs.confine_params): this is how the app starts runs, and a browser
    user must not reach arbitrary files of the server — nor run code from them (lm-eval task YAMLs import
    the .py files beside them). `meta`: a note stored beside the run (RunStore.create)."""
    params = confine_params(_stored(kind, req), path_fields(REQUESTS[kind]))
    store = store or RunStore()
    run_id = store.create(kind, params, group=group, meta=meta)
    if start_dispatcher:
        ensure_dispatcher()
    return run_id


def reuse_or_submit(kind: str, req, group: str | None = None, store: RunStore | None = None,
                    start_dispatcher: bool = True) -> tuple[int, bool]:
    """(run id, reused): a run with the same normalized request that is done, running or queued — the same
    request gives the same numbers, so it is not measured again — else a new queued run."""
    params = confine_params(_stored(kind, req), path_fields(REQUESTS[kind]))
    store = store or RunStore()
    same = store.find_same(kind, params)
    if same is not None:
        return same["id"], True
    run_id = store.create(kind, params, group=group)
    if start_dispatcher:
        ensure_dispatcher()
    return run_id, False


def submit_sweep(sweep, x: str, y: str, group: str, store: RunStore | None = None,
                 start_dispatcher: bool = True) -> list[dict]:
    """Queue a two-exponent sweep (a validated SweepRequest whose grid varies `x` and `y`): every cell an
    identical run has measured (or is measuring) reuses that run; the others are queued in `group`. The
    chosen axes, their values and each cell's run are stored with the sweep (RunStore.sweeps), so the
    landscape draws x as x and y as y. Returns the cells."""
    store = store or RunStore()
    cells = []
    for req in sweep.grid():
        run_id, reused = reuse_or_submit("prune", req, group=group, store=store, start_dispatcher=False)
        cells.append({"x": float(getattr(req, x)), "y": float(getattr(req, y)), "run": run_id, "reused": reused})
    xs = list(getattr(sweep, x + "s"))
    ys = list(getattr(sweep, y + "s"))
    store.create_sweep(group, x, y, xs, ys, cells)
    if start_dispatcher and not all(c["reused"] for c in cells):
        ensure_dispatcher()
    return cells


def recover(store: RunStore | None = None) -> bool:
    """What every look at the queue calls (the pages' polls, the CLI): runs whose process is gone are
    marked failed, and if runs are queued and no dispatcher is alive, one is started. Cheap when
    nothing is wrong (one query, one non-blocking flock). Returns whether a dispatcher was started."""
    store = store or RunStore()
    store.reap()
    if store.queued_count() == 0:
        return False
    started = ensure_dispatcher()
    if started:
        log.warning("runs were queued without a dispatcher; started one")
    return started


def cancel(run_id: int, store: RunStore | None = None) -> str:
    """Cancel a run; returns the status it ends in."""
    store = store or RunStore()
    run = store.get(run_id)
    if run["status"] == "queued" and store.finish(run_id, "cancelled", only_if=("queued",)):
        return "cancelled"
    run = store.get(run_id)
    if run["status"] == "running":
        store.finish(run_id, "cancelled", error="cancelled by the user", only_if=("running",))
        # the worker leads its own process group; a reused pid (start time differs) is left alone
        if run["pid"] and run["origin"] == "app" and process_alive(run["pid"], run.get("pid_start")):
            try:
                os.killpg(run["pid"], signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        return "cancelled"
    return run["status"]


def reap(store: RunStore | None = None) -> int:
    """Mark runs whose process no longer exists (pid and start time) as failed. Returns how many."""
    return (store or RunStore()).reap()


# ----------------------------------------------------------------------------------------------
# slots


def visible_gpus() -> list[str]:
    """CUDA devices this machine offers, without importing torch (the app process never does)."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        out = []
        for d in cvd.split(","):
            d = d.strip()
            if not d or d.startswith("-"):
                break  # CUDA ignores everything from the first invalid entry on
            out.append(d)
        return out
    try:
        n = len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        n = 0
    if n == 0 and shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
            n = sum(1 for line in out.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.SubprocessError):
            n = 0
    return [str(i) for i in range(n)]


def slot_devices() -> list[str | None]:
    """One entry per slot: the CUDA device its worker sees, or None on a CPU. As many slots as
    devices (1 on a CPU); NEURONRANK_SLOTS=N sets N (slots then share devices round-robin)."""
    gpus = visible_gpus()
    n = max(1, len(gpus))
    env = os.environ.get("NEURONRANK_SLOTS", "").strip()
    if env:
        try:
            n = int(env)
            if n < 1:
                raise ValueError
        except ValueError:
            log.warning("NEURONRANK_SLOTS=%r is not a positive whole number; using %d", env, max(1, len(gpus)))
            n = max(1, len(gpus))
    return [gpus[i % len(gpus)] if gpus else None for i in range(n)]


# ----------------------------------------------------------------------------------------------
# dispatcher and worker

POLL_SECONDS = 0.3


def _lock_path():
    return cache_dir() / "dispatcher.lock"


def _try_lock() -> int | None:
    """The dispatcher lock's file descriptor, locked; None if a dispatcher holds it."""
    fd = os.open(_lock_path(), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def ensure_dispatcher() -> bool:
    """Start a detached dispatcher unless one is alive. The lock is taken here and inherited by the
    child (an inherited descriptor shares the flock), so concurrent callers start one dispatcher
    between them. Returns whether one was started."""
    fd = _try_lock()
    if fd is None:
        return False
    try:
        logs = cache_dir() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / "dispatcher.log", "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "neuronrank.queue.jobs", "dispatch", str(fd)],
                                    pass_fds=(fd,),
                                    stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True,
                                    env=_child_env())
        # the caller (the Streamlit server, a CLI) lives on: reap the dispatcher when it exits, or it stays a
        # zombie child of the server for as long as the server runs
        threading.Thread(target=proc.wait, name=f"reap-dispatcher-{proc.pid}", daemon=True).start()
    finally:
        os.close(fd)  # the child keeps the lock
    return True


def _child_env() -> dict:
    # the package is installed (pip install -e .): children import it like any other; they share
    # this process's cache folder
    return {**os.environ, "NEURONRANK_CACHE": str(cache_dir())}


def dispatch(lock_fd: int | None = None) -> None:
    """Serve the queue while holding the lock (handed over, or taken here); exit when it is empty."""
    store = RunStore()
    devices = slot_devices()
    log.info("dispatcher %d: %d slot(s) %s", os.getpid(), len(devices), devices)
    while True:
        if lock_fd is None:
            lock_fd = _try_lock()
            if lock_fd is None:
                return  # another dispatcher serves the queue
        try:
            _serve(store, devices)
        finally:
            os.close(lock_fd)
            lock_fd = None
        # lock released: a run queued in the meantime found it held; look once more
        if store.queued_count() == 0:
            return


def _serve(store: RunStore, devices: list) -> None:
    """Fill free slots from the queue, watch the workers; return when nothing is queued and no
    worker of ours runs. A slot is busy while any live app run holds it, also one whose
    dispatcher died (its worker goes on)."""
    children: dict[int, subprocess.Popen] = {}
    while True:
        for run_id, proc in list(children.items()):
            rc = proc.poll()
            if rc is None:
                continue
            del children[run_id]
            if rc != 0:
                how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
                if store.finish(run_id, "failed", error=f"the worker process ended with {how}",
                                only_if=("running",)):
                    log.warning("run %s: worker ended with %s", run_id, how)
        busy = {r["slot"] or 0 for r in store.running() if r["origin"] == "app"}
        for slot in range(len(devices)):
            if slot in busy:
                continue
            run = store.claim_next(pid=os.getpid(), slot=slot)
            if run is None:
                break
            children[run["id"]] = _start_worker(store, run, devices[slot])
        if not children and store.queued_count() == 0:
            return
        time.sleep(POLL_SECONDS)


def _start_worker(store: RunStore, run: dict, device: str | None) -> subprocess.Popen:
    env = _child_env()
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    proc = subprocess.Popen([sys.executable, "-m", "neuronrank.queue.jobs", "work", str(run["id"])],
                            start_new_session=True, env=env, stdin=subprocess.DEVNULL)
    store.set_pid(run["id"], proc.pid)
    log.info("run %s: worker %d on %s", run["id"], proc.pid, f"cuda device {device}" if device else "cpu")
    return proc


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
    recover(store)  # the CLI looks at the queue too: runs stranded by a killed dispatcher start again
    run_id = store.create(kind, _stored(kind, req), status="running", group=group, origin="cli", pid=os.getpid())
    report = Reporter(store, run_id)

    def both(fraction, message, force=False):
        report(fraction, message, force)
        if progress is not None:
            progress(fraction, message)

    try:
        result = _job(kind)(req, both)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            status, error = "cancelled", "interrupted (Ctrl-C)"
        elif isinstance(e, Terminated):
            status, error = "cancelled", str(e)
        else:
            status, error = "failed", str(e) or type(e).__name__
        store.finish(run_id, status, error=error, only_if=("running",))
        raise
    store.finish(run_id, "done", result=result, only_if=("running",))
    return run_id, result


def _worker_main(run_id: int) -> int:
    raise_on_sigterm()
    try:
        execute(run_id)
    except Terminated as e:  # Cancel (already recorded) or a stop from outside: the run ends cancelled
        RunStore().finish(run_id, "cancelled", error=str(e), only_if=("running",))
        return 128 + e.signum
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    if sys.argv[1:2] == ["dispatch"]:
        dispatch(int(sys.argv[2]) if len(sys.argv) == 3 else None)
    elif sys.argv[1:2] == ["work"] and len(sys.argv) == 3:
        sys.exit(_worker_main(int(sys.argv[2])))
    else:
        print("usage: python -m neuronrank.queue.jobs dispatch | work RUN_ID", file=sys.stderr)
        sys.exit(2)
