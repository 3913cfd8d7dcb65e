"""The exponent search (neuronrank.search): real Optuna on the tiny model.

A planted objective's optimum is found; a trial's number is the prune command's number for the same
exponents and the weights come back bit for bit; two workers share one SQLite study; a worker killed
mid-trial leaves that trial failed and the study goes on; bad ranges and storage URLs are one error line.
"""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from neuronrank.search import study as search
from neuronrank.cli import main
from neuronrank.config.requests import SearchRequest
from neuronrank.search.worker import ModelEvaluator

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def base(tiny_dir, text_file, tmp_path):
    """A small search on the tiny model, in its own storage file."""
    return SearchRequest(model=str(tiny_dir), calib=f"file:{text_file}", eval=f"file:{text_file}", nsamples=4,
                         seqlen=16, eval_seqlen=16, eval_windows=8, trials=8,
                         storage=f"sqlite:///{tmp_path / 'studies.sqlite'}")


def cli_env():
    return {**os.environ, "PYTHONPATH": str(REPO)}


PLANTED = {"alpha": 0.7, "beta": 2.2, "gamma": 0.3}


def planted(alpha, beta, gamma) -> float:
    return 10.0 + 5.0 * ((alpha - 0.7) ** 2 + (beta - 2.2) ** 2 + (gamma - 0.3) ** 2)


class PlantedEvaluator(ModelEvaluator):
    """The real worker on the tiny model (load, prune, restore), but the number a trial reports is a
    planted function of its exponents, with a bias that shrinks as more windows are evaluated."""

    def prune(self, alpha, beta, gamma, **over):
        self.point = (alpha, beta, gamma)
        return super().prune(alpha, beta, gamma, **over)

    def evaluate(self, upto):
        super().evaluate(upto)  # the real perplexity runs (and is ignored)
        return planted(*self.point) + 1.0 / upto


def test_planted_optimum_is_found(base):
    req = replace(base, trials=40, seed=3)
    res = search.run_search(req, evaluator_factory=PlantedEvaluator)
    best = res["best"]
    assert res["trials"] == 40 and res["pruned"] > 0, res  # successive halving stopped some
    assert all(abs(best[k] - v) < 0.5 for k, v in PLANTED.items()), best
    assert best["ppl"] == pytest.approx(planted(best["alpha"], best["beta"], best["gamma"]) + 1 / 8)
    assert best["ppl"] < planted(1, 1, 1)  # better than the original exponents (trial 0)
    study = search.load_study(res["study"], req.storage)
    assert study.best_trial.number == best["trial"]
    assert study.trials[0].params == {"alpha": 1.0, "beta": 1.0, "gamma": 1.0}
    # every finished trial reported the ppl after 2, 4 (and 8) windows; stopped ones never reached 8
    for t in study.get_trials(states=(TrialState.PRUNED,)):
        assert max(t.intermediate_values) < 8
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        assert sorted(t.intermediate_values) == [2, 4, 8]
    # the baselines are stored with the study, once
    assert set(res["baselines"]) == {"dense", "wanda", "magnitude", "random"}
    assert res["baselines"]["wanda"]["group"] == "row"
    # the same command again resumes the finished study: no new trials
    again = search.run_search(req, evaluator_factory=PlantedEvaluator)
    assert again["study"] == res["study"] and again["trials"] == 40 and again["best"] == best


def test_trial_value_is_the_prune_commands_and_weights_come_back(base):
    from neuronrank.queue.kinds import prune_job

    req = search.resolve_request(replace(base, rungs=2))
    ev = ModelEvaluator(req)
    before = [copy.clone() for _, copy in ev._saved]
    ev.prune(0.5, 2.0, 0.0)
    assert any((p != c).any() for (p, _), c in zip(ev._saved, before))
    half = ev.evaluate(4)
    full = ev.evaluate(8)
    ev.restore()
    assert all(torch.equal(p, c) for (p, _), c in zip(ev._saved, before))
    ref = prune_job(req.prune_request(0.5, 2.0, 0.0), lambda *a, **k: None)
    assert ref["protocol"]["windows"] == 8
    assert full == pytest.approx(ref["pruned_ppl"], rel=1e-5)
    assert half != full
    # the dense model after a restore is the dense model
    assert ev.evaluate(8) == pytest.approx(ref["dense_ppl"], rel=1e-5)


def test_cli_search_json(base):
    r = subprocess.run([sys.executable, "-m", "neuronrank", "search", "--model", base.model, "--calib", base.calib,
                        "--eval", base.eval, "--nsamples", "4", "--seqlen", "16", "--eval-seqlen", "16",
                        "--eval-windows", "8", "--trials", "6", "--storage", base.storage, "--study", "cli-study",
                        "--gamma-range", "0,0", "--seed", "5", "--json"],
                       capture_output=True, text=True, timeout=300, env=cli_env(), cwd=REPO)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["command"] == "search" and out["study"] == "cli-study" and out["trials"] == 6
    assert out["best"]["gamma"] == 0.0 and out["best"]["ppl"] > 0
    assert out["pruned"] == out["trials"] - out["complete"]
    assert {"dense", "wanda", "magnitude", "random"} <= set(out["baselines"])
    assert out["per_trial"]["median"]["overhead"] >= 0 and out["evaluation"]["chunks"] == [2, 4, 8]
    assert "best: trial" in r.stdout and "baseline wanda" in r.stdout


def _wait(pred, timeout, what):
    t = time.time()
    while time.time() - t < timeout:
        v = pred()
        if v:
            return v
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_workers_share_one_sqlite_study(base):
    r = subprocess.run([sys.executable, "-m", "neuronrank", "search", "--model", base.model, "--calib", base.calib,
                        "--eval", base.eval, "--nsamples", "4", "--seqlen", "16", "--eval-seqlen", "16",
                        "--eval-windows", "8", "--trials", "10", "--storage", base.storage, "--study", "two",
                        "--workers", "2", "--json"],
                       capture_output=True, text=True, timeout=600, env=cli_env(), cwd=REPO)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    study = search.load_study("two", base.storage)
    trials = study.get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    # the workers share the study: no point was proposed twice, the budget holds (at most one extra in
    # flight), one best. (Which worker runs how many trials is timing: on the tiny model the first worker
    # can finish all ten before the second has loaded it, so each worker having run one is not asserted.)
    assert 1 <= len({t.user_attrs["worker"] for t in finished}) <= 2
    points = [tuple(t.params[k] for k in search.PARAMS) for t in finished]
    assert len(set(points)) == len(points)
    assert 10 <= len(finished) <= 11 and not [t for t in trials if t.state == TrialState.RUNNING]
    # one consistent best: Optuna's, the summary's and the CLI's
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert study.best_trial.number == min(complete, key=lambda t: t.value).number == out["best"]["trial"]
    assert out["best"]["ppl"] == study.best_value
    assert len(study.user_attrs["baselines"]) == 4


KILLABLE = textwrap.dedent("""
    import sys, time
    from dataclasses import replace
    from neuronrank.search import study as search
    from neuronrank.search import worker as search_model
    from neuronrank.config.requests import SearchRequest

    fast = search_model.ModelEvaluator.prune
    def slow(self, alpha, beta, gamma, **over):  # the original exponents (trial 0, baselines) run; others hang
        fast(self, alpha, beta, gamma, **over)
        if (alpha, beta, gamma) != (1.0, 1.0, 1.0):
            print("hanging", flush=True)
            time.sleep(600)
    search_model.ModelEvaluator.prune = slow
    req = SearchRequest(**{k: v for k, v in eval(sys.argv[1]).items()})
    search.run_search(req)
""")


def test_killed_worker_leaves_its_trial_failed_and_the_study_continues(base, tmp_path):
    req = replace(base, trials=6, study="killed")
    params = {k: getattr(req, k) for k in ("model", "calib", "eval", "nsamples", "seqlen", "eval_seqlen",
                                          "eval_windows", "trials", "storage", "study")}
    script = tmp_path / "killable.py"
    script.write_text(KILLABLE)
    proc = subprocess.Popen([sys.executable, str(script), repr(params)], env=cli_env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().strip() == "hanging"
        study = search.load_study("killed", req.storage)
        hung = _wait(lambda: [t for t in study.get_trials(states=(TrialState.RUNNING,))
                              if "worker" in t.user_attrs], 60, "the hanging trial")
        assert len(hung) == 1 and hung[0].number == 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # nothing touched the study since: the trial is still marked running
    assert study.trials[1].state == TrialState.RUNNING
    res = search.run_search(req)  # the next worker start finds the orphan
    study = search.load_study("killed", req.storage)
    assert study.trials[1].state == TrialState.FAIL
    assert res["trials"] == 6 and res["failed"] == 1 and res["running"] == 0
    assert study.trials[0].state == TrialState.COMPLETE and res["best"] is not None
    assert "baselines" in study.user_attrs  # computed by the killed worker before it hung, kept


def test_sigterm_fails_the_running_trial_at_once(base, tmp_path):
    """A stopped study (the page's Stop: SIGTERM to the worker) leaves no trial running."""
    req = replace(base, trials=6, study="stopped")
    params = {k: getattr(req, k) for k in ("model", "calib", "eval", "nsamples", "seqlen", "eval_seqlen",
                                          "eval_windows", "trials", "storage", "study")}
    script = tmp_path / "killable.py"
    script.write_text("import signal, sys\nsignal.signal(signal.SIGTERM, lambda s, f: sys.exit(143))\n" + KILLABLE)
    proc = subprocess.Popen([sys.executable, str(script), repr(params)], env=cli_env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().strip() == "hanging"
        study = search.load_study("stopped", req.storage)
        _wait(lambda: [t for t in study.get_trials(states=(TrialState.RUNNING,)) if "worker" in t.user_attrs],
              60, "the hanging trial")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [t.state for t in search.load_study("stopped", req.storage).trials] == [TrialState.COMPLETE,
                                                                                   TrialState.FAIL]


@pytest.mark.parametrize("extra,needle", [
    (["--alpha-range", "3,1"], "alpha range 3,1 is reversed"),
    (["--beta-range", "0"], "a range is two numbers LO,HI"),
    (["--gamma-range", "a,b"], "a range is two numbers LO,HI"),
    (["--alpha-range", "0,11"], "alpha range must be between 0 and 10"),
    (["--alpha-range", "nan,1"], "alpha range must be between 0 and 10"),
    (["--storage", "not a url"], "is not a SQLAlchemy URL"),
    (["--storage", "sqlite://"], "needs a file"),
    (["--storage", "redis://localhost/0"], "unknown database 'redis'"),
    (["--storage", "sqlite:////no/such/folder/s.db"], "folder /no/such/folder does not exist"),
    (["--storage", "postgresql://u:secret@127.0.0.1:1/db"], "storage postgresql://u:***@127.0.0.1:1/db"),
    (["--study", "bad name!"], "study name"),
    (["--trials", "0"], "trials must be between 1"),
    (["--workers", "0"], "workers must be between 1"),
    (["--prune_method", "wanda"], "--prune_method must be neuronrank_old"),
])
def test_bad_search_input_is_one_error_line(extra, needle, capsys, tiny_dir):
    assert main(["search", "--model", str(tiny_dir), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err
    assert "secret" not in err[0]


def test_joining_with_other_settings_is_refused(base):
    search.create_or_join(search.resolve_request(replace(base, study="fixed")), search.open_storage(base.storage))
    with pytest.raises(search.UserError, match="created with other settings: sparsity_ratio=0.5"):
        search.run_search(replace(base, study="fixed", sparsity_ratio=0.3))


def test_chunks_and_orphan_detection():
    assert search.chunk_sizes(3, 16) == [4, 8, 16]
    assert search.chunk_sizes(3, 10) == [2, 5, 10]
    assert search.chunk_sizes(1, 16) == [16]
    assert search.chunk_sizes(4, 2) == [1, 2]
    me = search.worker_ident()
    assert search._worker_alive(me)
    host = me.rsplit(":", 2)[0]
    assert not search._worker_alive(f"{host}:{2**22 + 12345}:1")  # no such pid
    assert search._worker_alive("some-other-host:1:1")  # another host: the heartbeat decides
    from neuronrank.runs.store import process_start

    start1 = process_start(1)  # the one /proc/PID/stat reader
    if start1:
        assert not search._worker_alive(f"{host}:1:{start1 + 1}")  # pid reused by another process


def test_list_studies_and_trials_frame(base):
    search.run_search(replace(base, trials=4, study="listed"), evaluator_factory=PlantedEvaluator)
    rows = search.list_studies(base.storage)
    assert [r["study"] for r in rows] == ["listed"] and rows[0]["trials"] == 4
    assert rows[0]["sparsity_type"] == "unstructured" and rows[0]["wanda_ppl"] > 0
    frame = search.trials_frame(search.load_study("listed", base.storage))
    assert list(frame["trial"]) == [0, 1, 2, 3] and set(frame["state"]) <= {"complete", "pruned"}
    assert frame["ppl"].notna().all()


def test_app_submitted_search_confines_its_storage_file(base):
    """The app queues searches for browser users: a SQLite storage path must lie in the allowed folders."""
    from neuronrank.queue import jobs
    from neuronrank.runs.store import RunStore

    with pytest.raises(search.UserError, match="outside the allowed folders"):
        jobs.submit("search", replace(base, storage="sqlite:////etc/studies.db"), start_dispatcher=False)
    run_id = jobs.submit("search", base, start_dispatcher=False)
    try:
        stored = RunStore().get(run_id)["params"]
        assert stored["storage"] == base.storage and stored["alpha_range"] == [0.0, 3.0]
    finally:
        assert jobs.cancel(run_id) == "cancelled"


# ----------------------------------------------------------------------------------------------
# resuming, concurrency, sequential calibration, a damaged or full study storage


def search_argv(req: SearchRequest, *extra) -> list[str]:
    return ["search", "--model", req.model, "--calib", req.calib, "--eval", req.eval, "--nsamples", "4",
            "--seqlen", "16", "--eval-seqlen", "16", "--eval-windows", "8", "--storage", req.storage, *extra]


def cli(argv, **kw):
    return subprocess.run([sys.executable, "-m", "neuronrank", *argv], capture_output=True, text=True, timeout=300,
                          env=cli_env(), cwd=REPO, **kw)


def stderr_lines(r) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.strip()]


def test_a_finished_study_resumed_with_more_trials_runs_the_missing_ones(base, capsys):
    argv = search_argv(base, "--study", "resumed", "--rungs", "1", "--json")
    assert main([*argv, "--trials", "2"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["trials"] == 2
    assert main([*argv, "--trials", "3"]) == 0  # --trials is the target count of finished trials
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["trials"] == 3 and out["failed"] == 0
    study = search.load_study("resumed", base.storage)
    assert [t.number for t in study.trials] == [0, 1, 2] and study.trials[0].params == search.ORIGINAL
    assert main([*argv, "--trials", "3"]) == 0  # reached: the same command shows the result again
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["trials"] == 3
    assert len(search.load_study("resumed", base.storage).trials) == 3


def test_sequential_calibration_searches_and_its_numbers_are_the_prune_commands(base, capsys):
    from neuronrank.queue.kinds import prune_job

    argv = search_argv(base, "--study", "seq", "--calibration", "sequential", "--trials", "2", "--rungs", "1",
                       "--json")
    assert main(argv) == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["trials"] == 2 and out["complete"] == 2 and out["failed"] == 0
    study = search.load_study("seq", base.storage)
    req = search.stored_request(study)
    assert req.calibration == "sequential" and req.sequential
    # trial 0 (α = β = γ = 1) and the wanda baseline are what `prune --calibration sequential` measures
    ref = prune_job(req.prune_request(1.0, 1.0, 1.0), lambda *a, **k: None)
    assert study.trials[0].value == pytest.approx(ref["pruned_ppl"], rel=1e-5)
    wanda = prune_job(req.prune_request(1.0, 1.0, 1.0, prune_method="wanda", group="row"), lambda *a, **k: None)
    assert out["baselines"]["wanda"]["ppl"] == pytest.approx(wanda["pruned_ppl"], rel=1e-5)
    one_pass = prune_job(replace(req, calibration="one-pass").prune_request(1.0, 1.0, 1.0), lambda *a, **k: None)
    assert one_pass["pruned_ppl"] != pytest.approx(ref["pruned_ppl"], rel=1e-6)  # sequential did something


CREATE = textwrap.dedent("""
    import json, sys, time
    from neuronrank.search import study as search
    from neuronrank.config.requests import SearchRequest
    params, starts = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    storage = search.open_storage(params["storage"])
    for name, start in starts.items():
        req = search.resolve_request(SearchRequest(**{**params, "study": name}))
        while time.time() < start:
            time.sleep(0.0005)
        print(search.create_or_join(req, storage).study_name, flush=True)
""")


def test_concurrent_study_creation_enqueues_the_original_exponents_once(base, tmp_path):
    """Six processes create the same fresh study at the same moment, three times over (in a storage whose
    tables exist: the first open of a fresh file is serialised apart)."""
    search.open_storage(base.storage)
    params = {k: getattr(base, k) for k in ("model", "calib", "eval", "nsamples", "seqlen", "eval_seqlen",
                                          "eval_windows", "storage")}
    t0 = time.time() + 8.0  # every process has imported optuna by then
    starts = {f"race-{i}": t0 + 1.5 * i for i in range(3)}
    script = tmp_path / "create.py"
    script.write_text(CREATE)
    procs = [subprocess.Popen([sys.executable, str(script), json.dumps(params), json.dumps(starts)],
                              env=cli_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(6)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [e for _, e in outs]
    assert all(o.split() == list(starts) for o, _ in outs), outs
    for name in starts:
        study = search.load_study(name, base.storage)
        assert len(study.trials) == 1, [t.system_attrs for t in study.trials]  # the original, enqueued once
        assert study.trials[0].state == TrialState.WAITING
        assert study.trials[0].system_attrs["fixed_params"] == search.ORIGINAL
        assert "protocol" in study.user_attrs


COORDINATOR = textwrap.dedent("""
    import json, sys, time
    from neuronrank.search import study as search
    from neuronrank.config.requests import SearchRequest

    class Planted:  # a worker's evaluator without a model: a planted ppl, a moment per chunk
        windows = 8
        protocol = {"source": "planted", "seqlen": 16, "windows": 8, "tokens": 120}

        def __init__(self, req, report=None):
            self.point = None

        def prune(self, alpha, beta, gamma, **over):
            self.point = (alpha, beta, gamma)

        def evaluate(self, upto):
            time.sleep(0.05)
            return 10 + sum((a - b) ** 2 for a, b in zip(self.point, (0.7, 2.2, 0.3)))

        def restore(self):
            pass

        def baselines(self, report=None):
            return {}

    params, start = json.loads(sys.argv[1]), float(sys.argv[2])
    req = SearchRequest(**params)
    while time.time() < start:
        time.sleep(0.0005)
    search.run_search(req, evaluator_factory=Planted)
""")


def test_two_coordinators_on_one_study_propose_different_points(base, tmp_path):
    """Four coordinators (`neuronrank search` started four times) join one study at the same moment: each
    worker's sampler has its own seed, so no point is proposed twice."""
    params = {k: getattr(base, k) for k in ("model", "calib", "eval", "nsamples", "seqlen", "eval_seqlen",
                                          "eval_windows", "storage")}
    params.update(study="coordinated", trials=10, rungs=1, seed=0)
    search.create_or_join(search.resolve_request(SearchRequest(**params)), search.open_storage(base.storage))
    script = tmp_path / "coordinator.py"
    script.write_text(COORDINATOR)
    start = time.time() + 8.0
    procs = [subprocess.Popen([sys.executable, str(script), json.dumps(params), str(start)], env=cli_env(),
                              cwd=REPO, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errs = [p.communicate(timeout=180)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errs
    finished = search.load_study("coordinated", base.storage).get_trials(states=search.FINISHED)
    assert 10 <= len(finished) <= 13
    points = [tuple(t.params[k] for k in search.PARAMS) for t in finished]
    assert len(set(points)) == len(points), points
    assert len({t.user_attrs["worker"] for t in finished}) >= 2  # they did run side by side


def _damage(path: Path, where: str) -> bytes:
    raw = bytearray(path.read_bytes())
    page = 4096
    assert len(raw) >= 6 * page, len(raw)
    rng = __import__("random").Random(0)
    if where == "header":
        raw[:100] = bytes(rng.randrange(256) for _ in range(100))
    else:  # the inner pages: page 1 (header and schema) intact, the tables' pages overwritten
        for i in range(2 * page, len(raw) - page, page):
            raw[i + 8: i + page] = bytes(rng.randrange(256) for _ in range(page - 8))
    path.write_bytes(bytes(raw))
    return bytes(raw)


@pytest.mark.parametrize("where", ["header", "pages"])
def test_a_damaged_study_storage_is_moved_aside_and_the_search_goes_on(base, where):
    search.run_search(replace(base, trials=3, study="before"), evaluator_factory=PlantedEvaluator)
    path = Path(base.storage[len("sqlite:///"):])
    for side in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-journal")):
        assert not side.exists()
    kept = _damage(path, where)
    r = cli(search_argv(base, "--study", "after", "--trials", "2", "--rungs", "1", "--json"))
    assert r.returncode == 0, r.stderr
    lines = stderr_lines(r)
    assert len(lines) == 1 and "study storage" in lines[0] and "was damaged" in lines[0], lines
    assert "Traceback" not in r.stderr
    aside = [p for p in path.parent.glob("studies.sqlite.damaged-*")]
    assert len(aside) == 1 and aside[0].read_bytes() == kept  # kept for inspection, never deleted
    assert json.loads(r.stdout.strip().splitlines()[-1])["trials"] == 2
    assert [row["study"] for row in search.list_studies(base.storage)] == ["after"]


def test_the_search_page_says_a_damaged_study_storage_was_replaced(tiny_dir, text_file, monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    cache = tmp_path / "cache"
    (cache / "search").mkdir(parents=True)
    (cache / "models").symlink_to(REPO / "cache" / "models", target_is_directory=True)
    monkeypatch.setenv("NEURONRANK_CACHE", str(cache))
    storage = f"sqlite:///{cache / 'search' / 'studies.sqlite'}"
    params = dict(model=str(tiny_dir), calib=f"file:{text_file}", eval=f"file:{text_file}", nsamples=4, seqlen=16,
                  eval_seqlen=16, eval_windows=8, trials=3, study="page", storage=storage)
    script = tmp_path / "coordinator.py"
    script.write_text(COORDINATOR)
    made = subprocess.run([sys.executable, str(script), json.dumps(params), "0"], env=cli_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    _damage(cache / "search" / "studies.sqlite", "pages")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.run()
    at.query_params["study"] = "page"
    at.switch_page("app_pages/5_search.py").run()
    assert not at.exception, [e.value for e in at.exception]
    said = [w.value.replace("\\\\", "") for w in at.warning]
    assert any("was damaged" in w and "fresh study storage" in w for w in said), said
    assert any("There is no study named page" in i.value for i in at.info)


FILL_MID_TRIAL = textwrap.dedent('''
    import sys
    from neuronrank.search import worker as search_model
    from neuronrank.cli import main

    fill_at, real = sys.argv[1], search_model.ModelEvaluator.prune

    def prune(self, alpha, beta, gamma, **over):  # the disk fills up during the second trial
        if (alpha, beta, gamma) != (1.0, 1.0, 1.0) and not over:
            with open(fill_at, "wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\\0" * 65536)
                except OSError:
                    pass
                try:
                    while True:
                        f.write(b"\\0" * 512)
                except OSError:
                    pass
        return real(self, alpha, beta, gamma, **over)

    search_model.ModelEvaluator.prune = prune
    sys.exit(main(sys.argv[2:]))
''')


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB file system of its own (tmpfs): root only."""
    mount = tmp_path / "small"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"a small file system cannot be mounted here ({r.stderr.strip() or 'not root'})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_mid_study_is_one_error_line_and_the_trial_fails(base, small_disk, tmp_path):
    from neuronrank.runs.store import RunStore

    storage = f"sqlite:///{small_disk / 'studies.sqlite'}"
    req = replace(base, storage=storage)
    script = tmp_path / "fill.py"
    script.write_text(FILL_MID_TRIAL)
    argv = search_argv(req, "--study", "full", "--trials", "3", "--rungs", "1", "--json")
    r = subprocess.run([sys.executable, str(script), str(small_disk / "filler"), *argv], capture_output=True,
                       text=True, timeout=300, env=cli_env(), cwd=REPO)
    lines = stderr_lines(r)
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: disk full"), lines
    study = search.load_study("full", storage)  # reading needs no space
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert "baselines" in study.user_attrs  # what was computed is kept
    run = RunStore().list(kind="search", limit=1)[0]
    assert run["status"] == "failed" and run["error"].startswith("disk full") and run["params"]["study"] == "full"
    (small_disk / "filler").unlink()  # space again: the same command goes on from there
    r = cli(argv)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["trials"] == 3 and out["failed"] == 1


def test_owl_lambda_is_searched_beside_the_exponents(base):
    """--layer-sparsity owl --owl-lambda-range: every trial prunes with OWL at the λ it proposes; the best
    trial names it; without the range the study's name and protocol stay what they were."""
    seen = []

    class Recording(PlantedEvaluator):
        def prune(self, alpha, beta, gamma, **over):
            info = super().prune(alpha, beta, gamma, **over)
            seen.append((over.get("owl_lambda"), info.get("owl")))
            return info

    req = replace(base, trials=3, rungs=1, layer_sparsity="owl", owl_lambda_range=(0.0, 0.2), study="owl-lambda")
    res = search.run_search(req, evaluator_factory=Recording)
    assert res["trials"] == 3 and 0.0 <= res["best"]["owl_lambda"] <= 0.2
    trials = [(lam, owl) for lam, owl in seen if lam is not None]
    assert len(trials) == 3
    for lam, owl in trials:  # the layer sparsities span 2λ around the ratio
        assert max(owl["sparsity"]) - min(owl["sparsity"]) == pytest.approx(2 * lam, abs=1e-9)
    frame = search.trials_frame(search.load_study("owl-lambda", base.storage))
    assert frame["owl_lambda"].between(0, 0.2).all()
    assert "owl_lambda" not in search.trials_frame(search.load_study(
        search.run_search(replace(base, trials=1, rungs=1, study="plain"),
                          evaluator_factory=PlantedEvaluator)["study"], base.storage)).columns
    assert "layer_sparsity" not in base.protocol()  # a study made before OWL keeps its protocol and name


def test_a_compensated_structured_search_restores_weights_and_removes_the_bias(base):
    req = search.resolve_request(replace(base, sparsity_type="structured", sparsity_ratio=0.25, compensate="mean"))
    ev = ModelEvaluator(req)
    before = [copy.clone() for _, copy in ev._saved]
    ev.prune(1.0, 1.0, 1.0)
    downs = [m for m in ev._no_bias if m.bias is not None]
    assert downs  # the compensation gave down_proj a bias
    ev.restore()
    assert all(m.bias is None for m in ev._no_bias)
    assert all(torch.equal(p, c) for (p, _), c in zip(ev._saved, before))
