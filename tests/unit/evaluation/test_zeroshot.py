"""Zero-shot accuracy through real lm-eval on a local task (YAML + JSONL), never the network."""

import pytest

from neuronrank import UserError

pytest.importorskip("lm_eval")


def test_prune_runs_lm_eval_on_a_local_task(tiny_dir, text_file, local_task, monkeypatch):
    from neuronrank.queue.kinds import prune_job
    from neuronrank.config.requests import PruneRequest

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    req = PruneRequest(model=str(tiny_dir), prune_method="magnitude", calib=f"file:{text_file}",
                       eval=f"file:{text_file}", eval_seqlen=16, eval_windows=2,
                       eval_tasks="nr_tiny_yesno", eval_tasks_path=str(local_task))
    res = prune_job(req, lambda *a: None)
    acc = res["zero_shot"]["nr_tiny_yesno"]["acc"]
    assert acc in (0.0, 0.25, 0.5, 0.75, 1.0)  # 4 questions


def test_a_missing_task_is_one_error_naming_it(local_task):
    from neuronrank.evaluation.zeroshot import check_tasks

    with pytest.raises(UserError, match="'no_such_task'"):
        check_tasks(["nr_tiny_yesno", "no_such_task"], str(local_task))


# --- checked before the model loads; a late failure keeps the perplexities ---------------------

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from neuronrank.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def no_model_load(monkeypatch):
    from neuronrank.engine import models

    def boom(*a, **k):
        raise AssertionError("the model was loaded before the zero-shot tasks were checked")

    monkeypatch.setattr(models, "load", boom)


def prune_argv(tiny_dir, text_file, *extra):
    return ["prune", "--model", str(tiny_dir), "--prune_method", "magnitude", "--calib", f"file:{text_file}",
            "--eval", f"file:{text_file}", "--eval-seqlen", "16", "--eval-windows", "2", *extra]


def one_error(capsys, argv, code=2):
    assert main(argv) == code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


def test_a_task_folder_that_does_not_exist_is_refused_before_the_model_loads(capsys, tiny_dir, text_file,
                                                                            no_model_load):
    line = one_error(capsys, prune_argv(tiny_dir, text_file, "--eval-tasks", "boolq", "--eval-tasks-path",
                                        "/nonexistent"))
    assert "--eval-tasks-path /nonexistent: no such folder" in line


def test_a_task_without_its_data_is_refused_before_the_model_loads(capsys, tiny_dir, text_file, local_task,
                                                                  no_model_load):
    (local_task / "tiny_yesno.jsonl").unlink()  # the task's data is gone: as an uncached dataset offline
    line = one_error(capsys, prune_argv(tiny_dir, text_file, "--eval-tasks", "nr_tiny_yesno", "--eval-tasks-path",
                                        str(local_task)))
    assert "zero-shot task 'nr_tiny_yesno' is not available" in line


def test_an_uncached_hub_task_offline_is_one_line_before_the_model_loads(tiny_dir, text_file):
    from neuronrank.runs.store import RunStore

    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "neuronrank", *prune_argv(tiny_dir, text_file, "--eval-tasks", "boolq")],
                       capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(err) == 1 and "zero-shot task 'boolq' is not available" in err[0], err
    run = RunStore().list(kind="prune", limit=1)[0]
    assert run["status"] == "failed" and run["params"]["eval_tasks"] == "boolq"
    assert run["progress"] == 0.0 and run["message"].startswith("zero-shot tasks: checking"), run["message"]


BROKEN = '''
def results(doc, results):
    raise RuntimeError("this task is broken")
'''


def test_a_task_failing_after_the_prune_keeps_the_perplexities(capsys, tiny_dir, text_file, local_task):
    from neuronrank.runs.store import RunStore

    (local_task / "broken.py").write_text(BROKEN)  # in a folder the CLI's user chose: runs as their code
    yaml = (local_task / "tiny_yesno.yaml").read_text().replace("task: nr_tiny_yesno", "task: nr_broken")
    (local_task / "broken.yaml").write_text(yaml + "process_results: !function broken.results\n")
    assert main(prune_argv(tiny_dir, text_file, "--eval-tasks", "nr_tiny_yesno,nr_broken", "--eval-tasks-path",
                           str(local_task), "--json")) == 1
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.startswith("error:")]  # lm-eval draws its bars too
    assert len(err) == 1 and err[0].startswith("error: zero-shot task 'nr_broken' failed: this task is broken"), err
    assert "kept in the run store as run" in err[0] and "Traceback" not in captured.err
    out = json.loads(captured.out.strip().splitlines()[-1])
    assert out["dense_ppl"] > 1 and out["pruned_ppl"] > 1
    assert out["zero_shot"]["nr_tiny_yesno"]["acc"] in (0.0, 0.25, 0.5, 0.75, 1.0)  # the task before it: kept
    assert out["zero_shot_failed"]["task"] == "nr_broken"
    run = RunStore().get(out["run_id"])
    assert run["status"] == "done" and run["result"]["pruned_ppl"] == out["pruned_ppl"]
