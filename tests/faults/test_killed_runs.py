"""Killed processes strand nothing: the queue recovers (one dispatcher, slots, a killed dispatcher or
worker or CLI run), dead runs are marked with their cause, a reused pid is told apart, and temporaries a
killed writer left behind are removed."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from neuronrank.data import stats_cache as store
from neuronrank.data.paths import cache_dir
from neuronrank.engine.statistics import get_stats
from neuronrank.queue import jobs
from neuronrank.runs.store import RunStore, process_start
from tests.faults.conftest import REPO, dispatcher_starts, lock_free, wait_for


def test_a_run_cancelled_before_its_worker_starts_does_not_run(tiny_dir, text_file):
    from neuronrank.queue import jobs
    from neuronrank.runs.store import RunStore

    store = RunStore()
    rid = jobs.submit("stats", {"model": str(tiny_dir), "calib": f"file:{text_file}", "nsamples": 2,
                                "seqlen": 16, "seed": 99}, start_dispatcher=False)
    while True:  # claim everything queued up to our run, as a dispatcher would
        run = store.claim_next(pid=os.getpid())  # a live "dispatcher"
        assert run is not None
        if run["id"] == rid:
            break
        store.finish(run["id"], "cancelled", only_if=("running",))
    assert store.get(rid)["pid"] is None  # never the dispatcher's pid: cancel must not signal it
    assert jobs.reap(store) == 0  # a just-claimed run is not "vanished"
    assert jobs.cancel(rid) == "cancelled"
    assert jobs.execute(rid, store) is None and store.get(rid)["status"] == "cancelled"


def test_sixteen_concurrent_submits_start_one_dispatcher(own_cache, tiny_dir, text_file):
    code = ("import sys; from neuronrank.queue import jobs; jobs.submit('stats', {'model': sys.argv[1], "
            "'calib': 'file:' + sys.argv[2], 'nsamples': 2, 'seqlen': 16, 'seed': int(sys.argv[3])})")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tiny_dir), str(text_file), str(i)], env=env)
             for i in range(16)]
    assert [p.wait(120) for p in procs] == [0] * 16
    store_ = RunStore()
    runs = store_.list()
    assert len(runs) == 16
    time.sleep(1.0)
    assert dispatcher_starts(own_cache) == 1
    for r in runs:
        jobs.cancel(r["id"])
    wait_for(lambda: lock_free(own_cache), 60, "the dispatcher to exit")
    assert {r["status"] for r in store_.list()} <= {"cancelled", "done"}


def test_a_killed_dispatcher_strands_nothing(own_cache, tiny_dir, text_file, long_text):
    store_ = RunStore()
    params = dict(model=str(tiny_dir), calib=f"file:{long_text}", nsamples=600, seqlen=64, batch_size=1)
    a = jobs.submit("stats", {**params, "seed": 1})
    b = jobs.submit("stats", {**params, "calib": f"file:{text_file}", "nsamples": 2, "seqlen": 16, "seed": 2})
    run = wait_for(lambda: (r := store_.get(a))["pid"] and r["progress"] > 0 and r, 120, "run a to start")
    os.kill(run["owner"], signal.SIGKILL)  # the dispatcher; its worker goes on in its own session
    wait_for(lambda: lock_free(own_cache), 10, "the lock to be released")
    done_a = wait_for(lambda: store_.get(a)["status"] != "running" and store_.get(a), 300, "run a to end")
    assert done_a["status"] == "done", done_a["error"]
    time.sleep(1.0)
    assert RunStore().queued_count() == 1  # nobody serves the queue ...
    assert jobs.recover() is True  # ... until someone looks at it (a page's poll, the CLI)
    assert jobs.recover() is False  # one dispatcher at a time
    done_b = wait_for(lambda: store_.get(b)["status"] not in ("queued", "running") and store_.get(b), 180, "b")
    assert done_b["status"] == "done", done_b["error"]
    assert dispatcher_starts(own_cache) == 2


def test_slots_run_as_many_runs_at_once_as_configured(own_cache, tiny_dir, long_text, monkeypatch):
    monkeypatch.setenv("NEURONRANK_SLOTS", "2")
    store_ = RunStore()
    params = dict(model=str(tiny_dir), calib=f"file:{long_text}", nsamples=200, seqlen=64, batch_size=1)
    ids = [jobs.submit("stats", {**params, "seed": s}) for s in (1, 2)]
    both = wait_for(lambda: all(store_.get(i)["status"] == "running" and store_.get(i)["pid"] for i in ids)
                    and [store_.get(i) for i in ids], 120, "both runs running")
    assert sorted(r["slot"] for r in both) == [0, 1]
    ends = [wait_for(lambda i=i: store_.get(i)["status"] == "done" and store_.get(i), 300, "done") for i in ids]
    assert max(r["started"] for r in ends) < min(r["finished"] for r in ends)  # they overlapped


def test_slot_devices_follow_the_visible_gpus(monkeypatch):
    monkeypatch.delenv("NEURONRANK_SLOTS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert jobs.slot_devices() == [None]  # a CPU: one slot
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert jobs.slot_devices() == ["2", "5"]
    monkeypatch.setenv("NEURONRANK_SLOTS", "3")
    assert jobs.slot_devices() == ["2", "5", "2"]
    monkeypatch.setenv("NEURONRANK_SLOTS", "zero")
    assert jobs.slot_devices() == ["2", "5"]
    started = {}

    class FakePopen:
        pid = os.getpid()

        def __init__(self, argv, env, **kw):
            started["env"] = env

    monkeypatch.setattr(jobs.subprocess, "Popen", FakePopen)
    rid = RunStore().create("stats", {}, status="running")
    jobs._start_worker(RunStore(), RunStore().get(rid), "5")
    assert started["env"]["CUDA_VISIBLE_DEVICES"] == "5"
    RunStore().finish(rid, "cancelled")


def _cli_prune(tiny_dir, long_text, *extra):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "neuronrank", "prune", "--model", str(tiny_dir), "--calib",
            f"file:{long_text}", "--nsamples", "3000", "--seqlen", "64", "--eval", f"file:{long_text}",
            "--eval-seqlen", "16", "--sparsity_ratio", "0.5", "--seed", "123", *extra]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cli_run_of(proc):
    return wait_for(lambda: next((r for r in RunStore().list(kind="prune") if r["pid"] == proc.pid
                                  and r["progress"] > 0.05), None), 180, "the CLI run to start its work")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_cli_run_never_stays_running(tiny_dir, long_text, sig):
    proc = _cli_prune(tiny_dir, long_text)
    run = _cli_run_of(proc)
    assert run["status"] == "running" and run["pid_start"] == process_start(proc.pid)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    after = RunStore().get(run["id"])  # the next read of the store settles it
    if sig == signal.SIGTERM:
        assert proc.returncode == 143
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines == ["error: terminated by SIGTERM"], err
        assert after["status"] == "cancelled" and after["error"] == "terminated by SIGTERM"
    else:
        assert proc.returncode == -signal.SIGKILL
        assert after["status"] == "failed" and "is gone" in after["error"]


def test_a_reused_pid_does_not_keep_a_dead_run_running():
    store_ = RunStore()
    rid = store_.create("ppl", {}, status="running", origin="cli", pid=os.getpid())
    live = store_.create("ppl", {}, status="running", origin="cli", pid=os.getpid())
    with store_._connect() as db:  # the pid now belongs to another process: its start time differs
        db.execute("UPDATE runs SET pid_start=pid_start-1 WHERE id=?", (rid,))
    assert store_.get(rid)["status"] == "failed"
    assert store_.get(live)["status"] == "running"
    store_.finish(live, "cancelled")


def test_stale_temporaries_are_removed_on_the_next_listing_or_write(req, tmp_path):
    import fcntl

    root = store.stats_root()
    root.mkdir(parents=True, exist_ok=True)
    old = time.time() - 3600
    stale, fresh, held = root / ".deadbeef.abc123", root / ".deadbeef.fresh1", root / ".deadbeef.held12"
    for folder in (stale, fresh, held):
        folder.mkdir()
        (folder / "stats.parquet").write_bytes(os.urandom(1 << 20))
    for folder in (stale, held):
        os.utime(folder, (old, old))
    tokens = cache_dir() / "tokens"
    tokens.mkdir(exist_ok=True)
    tok_tmp = tokens / ".x.npy.abc.tmp"
    tok_tmp.write_bytes(b"partial")
    os.utime(tok_tmp, (old, old))
    fd = os.open(held, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a writer still at work, however old its folder looks
    try:
        store.list_entries()
        assert not stale.exists() and fresh.exists() and held.exists()
    finally:
        os.close(fd)
    text = tmp_path / "new.txt"
    text.write_text("A text never tokenized before. " * 40)
    get_stats(replace(req, calib=f"file:{text}", seed=41))  # a write into the token cache
    assert not tok_tmp.exists()
    assert not held.exists()  # once its writer let go, the next write removed it
    import shutil

    shutil.rmtree(fresh)


def test_a_save_model_killed_half_way_is_cleaned_up(tmp_path):
    from neuronrank.prune.export import PARTIAL
    from neuronrank.data.paths import sweep_stale

    mine, theirs = tmp_path / ".out.tmp", tmp_path / ".their.tmp"
    for folder in (mine, theirs):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x" * 100)
        os.utime(folder, (time.time() - 3600,) * 2)
    (mine / PARTIAL).touch()
    os.utime(mine, (time.time() - 3600,) * 2)
    from neuronrank.prune import export

    sweep_stale(tmp_path, match=lambda p: p.name.endswith(".tmp") and (p / export.PARTIAL).exists())
    assert not mine.exists() and theirs.exists()  # a user's own hidden folder is not ours to delete
