"""Zero-shot accuracy through lm-eval-harness, on the in-memory (pruned) model.

Wanda's list: boolq, rte, hellaswag, winogrande, arc_easy, arc_challenge, openbookqa. Each task runs on
its own so that a task whose data is not available (offline, no datasets cache) is one clear error
naming it. `include_path` adds a folder of task YAMLs (a local task: YAML + JSONL, as the tests use).
"""

from __future__ import annotations

import logging

from neuronrank.errors import UserError

log = logging.getLogger(__name__)

WANDA_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")


def parse_tasks(text: str | None) -> list[str]:
    if not text:
        return []
    if str(text).strip() == "wanda":
        return list(WANDA_TASKS)
    return [t.strip() for t in str(text).split(",") if t.strip()]


def _manager(include_path: str | None):
    try:
        from lm_eval.tasks import TaskManager
    except ImportError as e:  # pragma: no cover - lm-eval is pinned in requirements
        raise UserError("zero-shot evaluation needs the lm-eval package (pip install -r requirements.txt)") from e
    return TaskManager(include_path=include_path) if include_path else TaskManager()


def check_tasks(tasks: list[str], include_path: str | None = None):
    """Every task name is one lm-eval knows (checked before a run loads anything) -> the TaskManager."""
    manager = _manager(include_path)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise UserError(f"unknown zero-shot task {unknown[0]!r} (lm-eval knows no task of that name"
                        + ("" if include_path else "; a local task needs --eval-tasks-path") + ")")
    return manager


def evaluate_tasks(model, tokenizer, tasks: list[str], include_path: str | None = None,
                   batch_size: int = 8, limit: int | None = None) -> dict:
    """{task: {metric: value}} for each task (lm-eval's acc / acc_norm and their stderr)."""
    manager = check_tasks(tasks, include_path)
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = {}
    for task in tasks:
        try:
            res = lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=manager, limit=limit,
                                          log_samples=False, verbosity="ERROR")
        except Exception as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"zero-shot task {task!r} is not available (its data is neither cached nor "
                            f"reachable offline): {first}") from e
        metrics = res["results"][task]
        keep = ("acc", "acc_norm", "acc_stderr", "acc_norm_stderr")
        out[task] = {k.split(",")[0]: float(v) for k, v in metrics.items()
                     if k.split(",")[0] in keep and isinstance(v, (int, float))}
    return out
