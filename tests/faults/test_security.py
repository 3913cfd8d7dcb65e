"""Security: nothing unsafe is loaded, the server binds to localhost, the app's runs stay inside the
allowed folders, names derived from input are safe, a save never replaces what it should not."""

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
    from neuronrank.data.inputs import confine_params

    monkeypatch.setenv("NEURONRANK_ALLOWED_DIRS", str(tmp_path))
    for params in ({"model": " /etc"}, {"calib": " file:/etc/hosts"}, {"eval": "file: /etc/hosts"},
                   {"save_model": "  /etc/x"}):
        with pytest.raises(UserError, match="outside the allowed folders"):
            confine_params(params)
