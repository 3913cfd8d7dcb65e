"""Security: nothing unsafe is loaded, the server binds to localhost, the app's runs stay inside the
allowed folders, names derived from input are safe, a save never replaces what it should not."""

import os
import re

import pytest

from neuronrank import UserError
from tests.faults.conftest import REPO, one_error_line


def test_no_pickle_or_torch_load_in_the_library():
    offenders = []
    for path in (REPO / "neuronrank").rglob("*.py"):
        text = path.read_text()
        for pat in (r"\btorch\.load\(", r"\bimport pickle\b", r"allow_pickle=True", r"trust_remote_code=True"):
            if re.search(pat, text):
                offenders.append(f"{path.name}: {pat}")
    assert offenders == []


def test_trust_remote_code_is_off_by_default(monkeypatch, tiny_dir):
    import transformers

    from neuronrank.engine import models

    seen = []
    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*a, **k):
        seen.append(k.get("trust_remote_code"))
        return real(*a, **k)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    models.load(str(tiny_dir))
    assert seen == [False]


def test_server_binds_to_localhost_without_usage_stats():
    import tomllib

    cfg = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "localhost"
    assert cfg["browser"]["gatherUsageStats"] is False


def test_app_paths_are_confined(tmp_path, monkeypatch):
    from neuronrank.data.paths import confine

    allowed = tmp_path / "data"
    allowed.mkdir()
    (allowed / "a.txt").write_text("x")
    monkeypatch.setenv("NEURONRANK_ALLOWED_DIRS", str(allowed))
    assert confine(str(allowed / "a.txt")) == (allowed / "a.txt").resolve()
    for bad in ("/etc/passwd", str(allowed / ".." / "x.txt"), "~/../../etc/shadow"):
        with pytest.raises(UserError, match="outside the allowed folders"):
            confine(bad)
    link = allowed / "link.txt"
    link.symlink_to("/etc/hostname")
    with pytest.raises(UserError, match="outside the allowed folders"):
        confine(str(link))


def test_model_ids_become_safe_file_names():
    from neuronrank.data.paths import safe_name

    for raw in ("../../etc/passwd", "org/model:v1", "a\x00b", "..", "/abs/path.gguf"):
        name = safe_name(raw)
        assert "/" not in name and "\x00" not in name and name not in (".", "..") and not name.startswith(".")


def test_save_model_never_replaces_a_folder_that_holds_other_things(capsys, tiny_dir, text_file, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    base = ["prune", "--model", str(tiny_dir), "--calib", f"file:{text_file}", "--eval", f"file:{text_file}",
            "--nsamples", "2", "--seqlen", "16", "--eval-seqlen", "16", "--eval-windows", "2", "--prune_method",
            "magnitude"]
    one_error_line(capsys, [*base, "--save_model", str(busy)], "exists and is not a saved model")
    assert (busy / "notes.txt").read_text() == "keep me"
    from neuronrank.data.paths import REPO_ROOT

    one_error_line(capsys, [*base, "--save_model", str(REPO_ROOT)], "refusing to save a model over")
    assert (REPO_ROOT / "README.md").is_file()


def test_confinement_cannot_be_dodged_with_white_space(tmp_path, monkeypatch):
    from neuronrank.config.fields import path_fields
    from neuronrank.config.requests import PruneRequest
    from neuronrank.data.inputs import confine_params

    monkeypatch.setenv("NEURONRANK_ALLOWED_DIRS", str(tmp_path))
    for params in ({"model": " /etc"}, {"calib": " file:/etc/hosts"}, {"eval": "file: /etc/hosts"},
                   {"save_model": "  /etc/x"}, {"save_masks": " /etc/m.safetensors"},
                   {"eval_tasks_path": " /etc"}):
        with pytest.raises(UserError, match="outside the allowed folders"):
            confine_params(params, path_fields(PruneRequest))


OUTSIDE = {"model": "/etc", "source": "file:/etc/hosts", "dir": "/etc/neuronrank-x",
           "file": "/etc/neuronrank-x.safetensors", "storage": "sqlite:////etc/neuronrank-x.db"}


# a field whose name or help speaks of these names something on disk and must declare its path kind
PATHISH = re.compile(r"path|folder|\bdir\b|file|url|\.gguf|sqlite", re.I)


def request_classes():
    from dataclasses import fields, is_dataclass

    from neuronrank.config import requests

    return [c for c in vars(requests).values()
            if isinstance(c, type) and is_dataclass(c) and any(f.metadata.get("flags") is not None
                                                                for f in fields(c))]


def test_every_path_valued_request_field_is_confined(tmp_path, monkeypatch):
    """Walks every request class: a field that names a file, a folder or a URL declares its path kind, and
    a queued run with that field outside the allowed folders is refused (a new path field cannot be
    forgotten: undeclared, this test names it)."""
    from dataclasses import fields

    from neuronrank.config import requests
    from neuronrank.config.fields import path_fields
    from neuronrank.data.inputs import confine_params
    from neuronrank.queue import jobs
    from neuronrank.runs.store import RunStore

    classes = request_classes()
    assert {c.__name__ for c in classes} >= {"StatsRequest", "PplRequest", "PruneRequest", "SweepRequest",
                                             "SearchRequest", "EvalFields"}
    undeclared = [f"{c.__name__}.{f.name}" for c in classes for f in fields(c)
                  if PATHISH.search(f"{f.name} {f.metadata['help']}") and not f.metadata.get("path")]
    assert undeclared == [], f"path-like fields without path=...: {undeclared}"
    assert path_fields(requests.PruneRequest) == {
        "model": "model", "calib": "source", "eval": "source", "eval_tasks_path": "dir", "save": "dir",
        "save_model": "dir", "save_masks": "file"}
    monkeypatch.setenv("NEURONRANK_ALLOWED_DIRS", str(tmp_path))
    store = RunStore(tmp_path / "runs.sqlite")
    by_class = {cls: kind for kind, cls in requests.REQUESTS.items()}
    for cls in classes:
        kinds = path_fields(cls)
        for name, kind in kinds.items():
            with pytest.raises(UserError, match="outside the allowed folders"):
                confine_params({name: OUTSIDE[kind]}, kinds)
            if cls in by_class:  # through the app's own submission call
                with pytest.raises(UserError, match="outside the allowed folders"):
                    jobs.submit(by_class[cls], cls(**{name: OUTSIDE[kind]}), store=store, start_dispatcher=False)
    assert store.list() == []
    # inside the allowed folders, or not a path at all, it passes
    inside = tmp_path / "tasks"
    assert confine_params({"eval_tasks_path": f" {inside} ", "model": "org/name", "calib": "news"},
                          path_fields(requests.PruneRequest)) == {
        "eval_tasks_path": str(inside), "model": "org/name", "calib": "news"}
    with pytest.raises(UserError, match="outside the allowed folders"):  # any SQLite driver names a file
        confine_params({"storage": "sqlite+pysqlite:////etc/x.db"}, {"storage": "storage"})


EVIL = """
import pathlib
MARK = pathlib.Path(__file__).with_name("EXECUTED")
MARK.write_text("imported")


def go(dataset):
    MARK.write_text("called")
    return dataset
"""


def test_a_task_folder_outside_the_allowed_folders_is_refused_at_submission(tiny_dir, text_file, tmp_path,
                                                                             monkeypatch):
    """An lm-eval task YAML is code: `!function evil.go` imports the evil.py beside it. Submitted as the
    Prune page submits a run (validate, check_inputs, jobs.submit) with the task folder outside the allowed
    folders, the run is refused at submission and nothing of the folder runs. (Were it queued, a worker
    would run it: the test then runs it as the worker does, and evil.py would write its file.)"""
    from neuronrank.config.requests import PruneRequest
    from neuronrank.data.inputs import check_inputs
    from neuronrank.queue import jobs
    from neuronrank.runs.store import RunStore

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "evil.py").write_text(EVIL)
    (elsewhere / "t.jsonl").write_text('{"question": "Is it?", "label": 0}\n{"question": "Not?", "label": 1}\n')
    (elsewhere / "t.yaml").write_text(f"""task: nr_evil_t
dataset_path: json
dataset_kwargs:
  data_files:
    test: {elsewhere / 't.jsonl'}
test_split: test
output_type: multiple_choice
process_docs: !function evil.go
doc_to_text: "{{{{question}}}} Answer:"
doc_to_target: label
doc_to_choice: ["yes", "no"]
metric_list:
  - metric: acc
""")
    monkeypatch.setenv("NEURONRANK_ALLOWED_DIRS", os.pathsep.join([str(tiny_dir), str(text_file.parent)]))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    req = PruneRequest(model=str(tiny_dir), prune_method="magnitude", calib=f"file:{text_file}",
                       eval=f"file:{text_file}", eval_seqlen=16, eval_windows=2, eval_tasks="nr_evil_t",
                       eval_tasks_path=str(elsewhere))
    req.validate()
    check_inputs(req)
    store = RunStore(tmp_path / "runs.sqlite")
    try:
        run_id = jobs.submit("prune", req, store=store, start_dispatcher=False)
    except UserError as e:
        refused = str(e)
    else:  # queued: what the dispatcher's worker would do with it
        refused = None
        run = store.claim_next(pid=os.getpid())
        assert run["id"] == run_id
        jobs.execute(run_id, store)
    assert not (elsewhere / "EXECUTED").exists(), "the task folder's Python ran"
    assert refused and "outside the allowed folders" in refused and str(elsewhere) in refused
    assert store.list() == []  # nothing queued
