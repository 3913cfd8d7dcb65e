"""Hardening: bad input gives one clear line, faults lose nothing, and nothing unsafe is loaded."""

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neuronrank import UserError, scoring
from neuronrank.cli import main
from neuronrank.pruning import lowest_mask

REPO = Path(__file__).resolve().parent.parent


# --- bad input through the CLI -----------------------------------------------------------------

def one_error_line(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
    assert needle in err[0], err[0]


@pytest.mark.parametrize("argv,needle", [
    (["stats", "--model", "nonexistent-org/nonexistent-model"], "cannot load model"),
    (["stats", "--seqlen", "100000"], "seqlen must be between 2 and 4096"),
    (["prune", "--weight-exp", "nan"], "alpha must be between"),
    (["prune", "--idf-exp", "1e9"], "gamma must be between"),
    (["prune", "--sparsity_type", "4:8", "--sparsity_ratio", "0.25"], "must be 0.5"),
    (["stats", "--nsamples", "-3"], "nsamples must be at least 1"),
])
def test_cli_bad_values(capsys, monkeypatch, argv, needle):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    one_error_line(capsys, argv, needle)


def test_bad_model_files(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    one_error_line(capsys, ["stats", "--model", str(tmp_path / "empty")], "not a model (no config.json)")
    trunc = tmp_path / "t.gguf"
    trunc.write_bytes(b"GGUF\x03\x00\x00\x00")
    one_error_line(capsys, ["stats", "--model", str(trunc)], "cannot read GGUF")


def test_gpt2_style_model_is_refused(capsys, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model("gpt2", n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path / "gpt2")
    one_error_line(capsys, ["stats", "--model", str(tmp_path / "gpt2")], "has no gated MLP; supported: Llama")


def test_seqlen_longer_than_context(capsys, tiny_dir, text_file):
    one_error_line(capsys, ["stats", "--model", str(tiny_dir), "--calib", f"file:{text_file}", "--seqlen", "300"],
                   "longer than the model's context (256 tokens)")


def test_pruning_last_beyond_layers(capsys, tiny_dir, text_file):
    one_error_line(capsys, ["prune", "--model", str(tiny_dir), "--calib", f"file:{text_file}", "--eval",
                            f"file:{text_file}", "--pruning_last", "5", "--eval-seqlen", "16"],
                   "exceeds the model's 2 layers")


def test_unusable_cache_folder(capsys, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("NEURONRANK_CACHE", str(blocker / "cache"))  # a path below a regular file
    one_error_line(capsys, ["stats"], "cache folder")


def test_full_disk_while_writing_an_entry(tiny_dir, text_file, monkeypatch):
    import errno

    from neuronrank import store
    from neuronrank.pipeline import get_stats
    from neuronrank.requests import StatsRequest

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.np, "savez", full)
    req = StatsRequest(model=str(tiny_dir), calib=f"file:{text_file}", nsamples=2, seqlen=16, seed=77)
    with pytest.raises(UserError, match="No space left"):
        get_stats(req)
    assert not [p for p in store.stats_root().iterdir() if p.name.startswith(".")]  # nothing half-written
    monkeypatch.undo()
    assert not get_stats(req).cached


def test_unknown_run_id():
    from neuronrank import jobs
    from neuronrank.runs import RunStore

    with pytest.raises(UserError, match="no run with id 123456"):
        RunStore().get(123456)
    with pytest.raises(UserError, match="no run with id 123456"):
        jobs.cancel(123456)


# --- faults ------------------------------------------------------------------------------------

def test_out_of_memory_backs_off_the_batch(tiny, tiny_windows, monkeypatch):
    """A batch that does not fit is split in halves and retried; the numbers are unchanged."""
    from neuronrank.models import decoder_body
    from neuronrank.stats import batched, collect

    ref = collect(tiny, batched(tiny_windows, 6))
    body = decoder_body(tiny)
    real = body.forward
    calls = []

    def limited(*a, input_ids=None, **k):
        calls.append(input_ids.shape[0])
        if input_ids.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*a, input_ids=input_ids, **k)

    monkeypatch.setattr(body, "forward", limited)
    got = collect(tiny, batched(tiny_windows, 6))
    assert calls[:3] == [6, 3, 1] or 6 in calls and max(c for c in calls if c <= 2) <= 2
    np.testing.assert_allclose(got.tf, ref.tf, rtol=1e-6)
    np.testing.assert_array_equal(got.n_active, ref.n_active)
    np.testing.assert_array_equal(got.tokens, ref.tokens)
    np.testing.assert_array_equal(got.top_window, ref.top_window)


def test_perplexity_backs_off_too(tiny, tiny_windows, monkeypatch):
    from neuronrank.evaluate import perplexity
    from neuronrank.models import decoder_body

    ref = perplexity(tiny, tiny_windows, batch_size=6).ppl
    body = decoder_body(tiny)
    real = body.forward

    def limited(*a, input_ids=None, **k):
        if input_ids.shape[0] > 1:
            raise torch.OutOfMemoryError("simulated")
        return real(*a, input_ids=input_ids, **k)

    monkeypatch.setattr(body, "forward", limited)
    assert perplexity(tiny, tiny_windows, batch_size=6).ppl == pytest.approx(ref, rel=1e-6)


# --- security ----------------------------------------------------------------------------------

def test_no_pickle_or_torch_load_in_the_library():
    offenders = []
    for path in (REPO / "neuronrank").glob("*.py"):
        text = path.read_text()
        for pat in (r"\btorch\.load\(", r"\bimport pickle\b", r"allow_pickle=True", r"trust_remote_code=True"):
            if re.search(pat, text):
                offenders.append(f"{path.name}: {pat}")
    assert offenders == []


def test_trust_remote_code_is_off_by_default(monkeypatch, tiny_dir):
    import transformers

    from neuronrank import models

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
    from neuronrank.paths import confine

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


OUTSIDE = {"model": "/etc", "source": "file:/etc/hosts", "dir": "/etc/neuronrank-x",
           "storage": "sqlite:////etc/neuronrank-x.db"}
# a field whose name or help speaks of these names something on disk and must declare its path kind
PATHISH = re.compile(r"path|folder|\bdir\b|file|url|\.gguf|sqlite", re.I)


def request_classes():
    from dataclasses import fields, is_dataclass

    from neuronrank import requests

    return [c for c in vars(requests).values()
            if isinstance(c, type) and is_dataclass(c) and any(f.metadata.get("flags") is not None
                                                                for f in fields(c))]


def test_every_path_valued_request_field_is_confined(tmp_path, monkeypatch):
    """Walks every request class: a field that names a file, a folder or a URL declares its path kind, and
    a queued run with that field outside the allowed folders is refused (a new path field cannot be
    forgotten: undeclared, this test names it)."""
    from dataclasses import fields

    from neuronrank import jobs, requests
    from neuronrank.paths import confine_params
    from neuronrank.runs import RunStore

    classes = request_classes()
    assert {c.__name__ for c in classes} >= {"StatsRequest", "PplRequest", "PruneRequest", "SweepRequest",
                                             "SearchRequest", "EvalFields"}
    undeclared = [f"{c.__name__}.{f.name}" for c in classes for f in fields(c)
                  if PATHISH.search(f"{f.name} {f.metadata['help']}") and not f.metadata.get("path")]
    assert undeclared == [], f"path-like fields without path=...: {undeclared}"
    assert requests.path_fields(requests.PruneRequest) == {
        "model": "model", "calib": "source", "eval": "source", "eval_tasks_path": "dir", "save": "dir",
        "save_model": "dir"}
    monkeypatch.setenv("NEURONRANK_ALLOWED_DIRS", str(tmp_path))
    store = RunStore(tmp_path / "runs.sqlite")
    by_class = {cls: kind for kind, cls in requests.REQUESTS.items()}
    for cls in classes:
        kinds = requests.path_fields(cls)
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
                          requests.path_fields(requests.PruneRequest)) == {
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
    from neuronrank import jobs, requests
    from neuronrank.requests import PruneRequest
    from neuronrank.runs import RunStore

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
    requests.check_inputs(req)
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


def test_model_ids_become_safe_file_names():
    from neuronrank.paths import safe_name

    for raw in ("../../etc/passwd", "org/model:v1", "a\x00b", "..", "/abs/path.gguf"):
        name = safe_name(raw)
        assert "/" not in name and "\x00" not in name and name not in (".", "..") and not name.startswith(".")


# --- properties --------------------------------------------------------------------------------

finite = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(finite, finite, st.floats(1.0, 20.0)), min_size=1, max_size=60),
       st.floats(0, 3), st.floats(0, 3), st.floats(0, 3), st.floats(0, 0.99))
def test_scores_finite_nonnegative_and_ratio_met(rows, a, b, g, ratio):
    w, tf, idf = map(np.array, zip(*rows))
    import pandas as pd

    frame = pd.DataFrame({"w_norm": w, "tf": tf, "idf": idf, "layer": 0})
    s = scoring.score(frame, a, b, g)
    assert np.isfinite(s).all() and (s >= 0).all()
    mask = scoring.lowest(s, None, ratio)
    assert mask.sum() == round(ratio * len(s))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 6), st.floats(0, 0.99), st.sampled_from(["matrix", "row"]),
       st.integers(0, 2**31 - 1))
def test_mask_prunes_exactly_the_ratio(rows, blocks, ratio, group, seed):
    g = torch.Generator().manual_seed(seed)
    metric = torch.rand(rows, blocks * 4, generator=g).round(decimals=1)  # many ties
    mask = lowest_mask(metric, ratio, "unstructured", group)
    if group == "matrix":
        assert int(mask.sum()) == round(ratio * metric.numel())
    else:
        assert (mask.sum(1) == round(ratio * metric.shape[1])).all()
    kept, pruned = metric[~mask], metric[mask]
    if pruned.numel() and kept.numel() and group == "matrix":
        assert pruned.max() <= kept.min()
    nm = lowest_mask(metric, 0.5, "2:4")
    assert (nm.reshape(rows, -1, 4).sum(-1) == 2).all()


# --- found in review ---------------------------------------------------------------------------

def test_save_model_never_replaces_a_folder_that_holds_other_things(capsys, tiny_dir, text_file, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    base = ["prune", "--model", str(tiny_dir), "--calib", f"file:{text_file}", "--eval", f"file:{text_file}",
            "--nsamples", "2", "--seqlen", "16", "--eval-seqlen", "16", "--eval-windows", "2", "--prune_method",
            "magnitude"]
    one_error_line(capsys, [*base, "--save_model", str(busy)], "exists and is not a saved model")
    assert (busy / "notes.txt").read_text() == "keep me"
    from neuronrank.paths import REPO_ROOT

    one_error_line(capsys, [*base, "--save_model", str(REPO_ROOT)], "refusing to save a model over")
    assert (REPO_ROOT / "README.md").is_file()


def test_confinement_cannot_be_dodged_with_white_space(tmp_path, monkeypatch):
    from neuronrank.paths import confine_params
    from neuronrank.requests import PruneRequest, path_fields

    monkeypatch.setenv("NEURONRANK_ALLOWED_DIRS", str(tmp_path))
    for params in ({"model": " /etc"}, {"calib": " file:/etc/hosts"}, {"eval": "file: /etc/hosts"},
                   {"save_model": "  /etc/x"}, {"eval_tasks_path": " /etc"}):
        with pytest.raises(UserError, match="outside the allowed folders"):
            confine_params(params, path_fields(PruneRequest))


def test_a_run_cancelled_before_its_worker_starts_does_not_run(tiny_dir, text_file):
    from neuronrank import jobs
    from neuronrank.runs import RunStore

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


def test_diverged_perplexity_is_inf_and_json_null(tiny, tiny_windows, capsys):
    from neuronrank.cli import _emit, _finite
    from neuronrank.evaluate import perplexity

    with torch.no_grad():
        tiny.lm_head.weight.mul_(1e5)
    assert perplexity(tiny, tiny_windows).ppl == float("inf")
    assert _finite({"a": float("inf"), "b": [float("nan"), 1.5]}) == {"a": None, "b": [None, 1.5]}

    class Args:
        json = True

    _emit(Args, {"pruned_ppl": float("inf")})
    assert capsys.readouterr().out.strip() == '{"pruned_ppl": null}'


def test_delete_of_a_vanished_entry_is_quiet_for_internal_callers():
    from neuronrank import store

    store.delete_entry("0123456789abcdef", missing_ok=True)
    with pytest.raises(UserError, match="no cache entry"):
        store.delete_entry("0123456789abcdef")


def test_file_system_errors_are_one_line(capsys, tiny_dir, text_file, tmp_path):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"text": "caf\xe9"}\n')
    one_error_line(capsys, ["stats", "--model", str(tiny_dir), "--calib", f"file:{bad}"], "not UTF-8")
    one_error_line(capsys, ["stats", "--model", "~no_such_user_xyz/model"], "model path not found")
    one_error_line(capsys, ["stats", "--model", str(tiny_dir), "--calib", f"file:{text_file}", "--nsamples", "2",
                            "--seqlen", "16", "--out", "/proc/nope/x.parquet"], "error:")


def test_resaving_a_model_folder_changes_its_identity(tmp_path):
    from neuronrank import models
    from tests.conftest import write_tiny_model_dir

    folder = write_tiny_model_dir(tmp_path / "m")
    before = models.resolve(str(folder)).identity()
    weights = next(folder.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert models.resolve(str(folder)).identity() != before
