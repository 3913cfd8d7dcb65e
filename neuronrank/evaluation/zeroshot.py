"""Zero-shot accuracy through lm-eval-harness, on the in-memory (pruned) model.

Wanda's list: boolq, rte, hellaswag, winogrande, arc_easy, arc_challenge, openbookqa. Before a run loads
its model, every task name is checked and every task is built once (which loads its data), so a task
whose data is not available (offline, no datasets cache) is one clear error naming it; each task then
runs on its own, and one that fails after the prune is named while the run keeps its perplexities.
`include_path` adds a folder of task YAMLs (a local task: YAML + JSONL, as the tests use) — task YAMLs
are code (`!function` imports the .py files beside them): runs from the app confine the folder.
"""

from __future__ import annotations

import contextlib
import logging

from neuronrank.data.inputs import check_task_folder
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
    if include_path:
        check_task_folder(include_path)
    return TaskManager(include_path=include_path) if include_path else TaskManager()


def check_tasks(tasks: list[str], include_path: str | None = None):
    """Every task name is one lm-eval knows (checked before a run loads anything) -> the TaskManager."""
    manager = _manager(include_path)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise UserError(f"unknown zero-shot task {unknown[0]!r} (lm-eval knows no task of that name"
                        + ("" if include_path else "; a local task needs --eval-tasks-path") + ")")
    return manager


@contextlib.contextmanager
def _quiet():
    """lm-eval, datasets and the hub client log every retry and default: the run says one line instead."""
    names = ("lm_eval", "lm-eval", "datasets", "huggingface_hub", "fsspec", "urllib3")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def check_data(tasks: list[str], manager) -> None:
    """Build each task once, which loads its data (from the datasets cache, a local file, or the hub): a
    task whose data is not available is one UserError naming it, before any model loads."""
    with _quiet():
        for task in tasks:
            try:
                manager.load_task_or_group([task])
            except Exception as e:  # noqa: BLE001  (datasets and the hub raise many types)
                raise UserError(f"zero-shot task {task!r} is not available (its data is neither cached nor "
                                f"reachable offline): {_first_line(e)}") from e


class ZeroShotFailed(UserError):
    """A task failed after the prune: `done` holds the tasks that finished before it."""

    def __init__(self, task: str, message: str, done: dict):
        super().__init__(message)
        self.task, self.done = task, done


def evaluate_tasks(model, tokenizer, tasks: list[str], include_path: str | None = None,
                   batch_size: int = 8, limit: int | None = None, manager=None) -> dict:
    """{task: {metric: value}} for each task (lm-eval's acc / acc_norm and their stderr). A failing task
    raises ZeroShotFailed naming it, with the accuracies of the tasks before it."""
    manager = manager or check_tasks(tasks, include_path)
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = {}
    for task in tasks:
        try:
            with _quiet():
                res = lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=manager, limit=limit,
                                              log_samples=False, verbosity="ERROR")
        except Exception as e:  # noqa: BLE001
            log.error("zero-shot task %s failed: %s", task, _first_line(e))
            raise ZeroShotFailed(task, f"zero-shot task {task!r} failed: {_first_line(e)}", out) from e
        metrics = res["results"][task]
        keep = ("acc", "acc_norm", "acc_stderr", "acc_norm_stderr")
        out[task] = {k.split(",")[0]: float(v) for k, v in metrics.items()
                     if k.split(",")[0] in keep and isinstance(v, (int, float))}
    return out
