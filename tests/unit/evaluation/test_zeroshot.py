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
