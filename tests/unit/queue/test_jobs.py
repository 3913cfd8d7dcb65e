"""Runs in worker processes: queueing, progress, cancel, a killed worker, the CLI's in-process runs."""

import os
import signal
import time
from pathlib import Path

import pytest

from neuronrank import UserError
from neuronrank.queue import jobs
from neuronrank.runs.store import RunStore


def wait_for(store, run_id, statuses=("done", "failed", "cancelled"), timeout=180):
    t = time.time()
    while time.time() - t < timeout:
        run = store.get(run_id)
        if run["status"] in statuses:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} still {store.get(run_id)['status']}")


@pytest.fixture
def stats_params(tiny_dir, text_file):
    return dict(model=str(tiny_dir), calib=f"file:{text_file}", nsamples=4, seqlen=16, seed=5, batch_size=2)


def test_queued_runs_complete_one_after_another(stats_params):
    store = RunStore()
    a = jobs.submit("stats", stats_params)
    b = jobs.submit("stats", {**stats_params, "seed": 6})
    ra, rb = wait_for(store, a), wait_for(store, b)
    assert ra["status"] == rb["status"] == "done", (ra["error"], rb["error"])
    assert ra["result"]["tokens"] == 64 and ra["progress"] == 1.0
    assert ra["finished"] <= rb["started"]  # one heavy run at a time
    assert ra["params"]["seed"] == 5 and rb["params"]["seed"] == 6  # neither sees the other's parameters


def test_failed_run_records_a_readable_error(stats_params):
    store = RunStore()
    rid = jobs.submit("stats", {**stats_params, "calib": "bogus"})
    run = wait_for(store, rid)
    assert run["status"] == "failed" and "unknown text source 'bogus'" in run["error"]


def test_cancel_queued_and_unknown():
    store = RunStore()
    rid = jobs.submit("stats", {"nsamples": 1}, start_dispatcher=False)
    assert jobs.cancel(rid) == "cancelled" and store.get(rid)["status"] == "cancelled"
    with pytest.raises(UserError, match="no run with id 999999"):
        jobs.cancel(999999)
    with pytest.raises(UserError, match="unknown run kind"):
        jobs.submit("train", {})


def test_killed_worker_is_marked_failed_and_queue_moves_on(stats_params, tmp_path):
    store = RunStore()
    # a run that takes long enough to be killed: the embedded-size work is not needed, a slow text is
    # (long enough that 4000 windows of 64 do not repeat it more than corpora.REPEAT_LIMIT times)
    long_text = tmp_path / "long.txt"
    base = open(stats_params["calib"][5:]).read()
    long_text.write_text("\n\n".join(f"Part {i}. {base}" for i in range(200)))  # distinct documents
    slow = jobs.submit("stats", {**stats_params, "calib": f"file:{long_text}", "nsamples": 4000, "seqlen": 64,
                                 "seed": 11, "batch_size": 1})
    after = jobs.submit("stats", {**stats_params, "seed": 12})
    t = time.time()
    while time.time() - t < 120:
        run = store.get(slow)
        if run["status"] == "running" and run["pid"] and run["pid"] != 0 and run["progress"] > 0:
            break
        time.sleep(0.1)
    os.kill(run["pid"], signal.SIGKILL)
    dead = wait_for(store, slow)
    assert dead["status"] == "failed" and "SIGKILL" in dead["error"]
    assert wait_for(store, after)["status"] == "done"


def test_reap_marks_vanished_workers(stats_params):
    store = RunStore()
    rid = store.create("stats", stats_params, status="running", pid=2**22 + 12345)  # no such process
    assert jobs.reap(store) >= 1
    assert store.get(rid)["status"] == "failed"


def test_run_here_records_cli_runs(stats_params):
    rid, result = jobs.run_here("stats", stats_params)
    run = RunStore().get(rid)
    assert run["status"] == "done" and run["origin"] == "cli" and run["result"]["tokens"] == result["tokens"] == 64


def test_finished_dispatchers_are_not_left_as_zombies():
    """The app's server process starts dispatchers; once one exits it must be reaped, not left a zombie
    (nothing else here starts a process that would reap it by chance)."""
    store = RunStore()
    deadline = time.time() + 60
    while store.queued_count() or store.running():
        assert time.time() < deadline, "the queue did not drain"
        time.sleep(0.2)
    deadline = time.time() + 60
    while not jobs.ensure_dispatcher():  # a dispatcher of an earlier test still holds the lock
        assert time.time() < deadline, "a dispatcher is still alive"
        time.sleep(0.5)
    deadline = time.time() + 60
    while _children(alive=True) and time.time() < deadline:  # the dispatcher finds no work and exits
        time.sleep(0.2)
    time.sleep(0.5)
    assert _children(alive=False) == []


def _children(alive: bool) -> list[int]:
    """This process's children: running ones, or ones that exited but were never waited for (zombies)."""
    me, out = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and (fields[0] != "Z") == alive:
            out.append(int(stat.parent.name))
    return out


def test_a_baseline_run_records_no_exponents():
    """Exponents are the NeuronRank-OLD score's: a wanda run queued with them stores none (the app
    disables those fields for baselines; the run history then shows no exponents it ignored)."""
    from neuronrank.config.requests import PruneRequest

    store = RunStore()
    rid = jobs.submit("prune", PruneRequest(prune_method="wanda", alpha=2.0, gamma=0.0), start_dispatcher=False)
    p = store.get(rid)["params"]
    assert (p["alpha"], p["beta"], p["gamma"]) == (None, None, None)
    jobs.cancel(rid)
    rid = jobs.submit("prune", PruneRequest(alpha=2.0, gamma=0.0), start_dispatcher=False)
    assert (store.get(rid)["params"]["alpha"], store.get(rid)["params"]["gamma"]) == (2.0, 0.0)
    jobs.cancel(rid)
