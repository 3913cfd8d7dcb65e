"""What a request names on disk, checked before a run is queued or loads anything.

    check_inputs(req)              the model spec resolves, every file: text source is a file, a task
                                   folder is a folder, every output target is writable (an hour of work
                                   must not end in a typo)
    confine_params(params, kinds)  the app's runs: every path a run names lies inside the allowed folders
                                   (a browser user must not reach arbitrary files of the server)
    check_typed_path / _model      the same, as the app's user types (in the app's words)
"""

from __future__ import annotations

from pathlib import Path

from neuronrank.data.paths import check_model_folder, check_output_file, check_output_folder, confine
from neuronrank.data.specs import ALIASES, resolve
from neuronrank.errors import UserError


def check_task_folder(include_path: str) -> None:
    """--eval-tasks-path names an existing folder (lm-eval would silently index nothing)."""
    path = Path(str(include_path).strip()).expanduser()
    if not path.is_dir():
        raise UserError(f"--eval-tasks-path {include_path}: " + ("is a file, not a folder of task YAMLs"
                                                                if path.exists() else "no such folder"),
                        field="eval_tasks_path")


def check_text_file(source: str, field: str | None = None) -> None:
    """A file: text source names a file (`field`: the request field that names it)."""
    source = str(source or "").strip()
    if source.startswith("file:"):
        path = Path(source[len("file:"):].strip()).expanduser()
        if not path.is_file():
            raise UserError(f"text file not found: {path}", field=field,
                            app=f"{{field}}: the file {path} does not exist.")


def check_inputs(req) -> None:
    """What exists on disk, checked before anything is queued or loaded: the model spec resolves,
    every file: text source is a file, every output target is writable. (No model is loaded.)"""
    if hasattr(req, "model"):
        try:
            resolve(req.model)
        except UserError as e:
            raise UserError(str(e), field="model") from e
    for name in ("calib", "eval"):
        if hasattr(req, name):
            check_text_file(getattr(req, name), name)
    if getattr(req, "eval_tasks_path", None):
        check_task_folder(req.eval_tasks_path)
    # output targets, before any model loads: a typo must not cost the run
    if getattr(req, "save", None):
        check_output_folder(req.save, "--save")
    if getattr(req, "save_model", None):
        check_model_folder(Path(req.save_model), "--save_model")
    if getattr(req, "save_masks", None):
        check_output_file(req.save_masks, "--save-masks")


def confine_params(params: dict, kinds: dict[str, str]) -> dict:
    """Apply confine() to every path a run's parameters name. `kinds` is {field: path kind} of the
    run's request (config.fields.path_fields: model, source, dir, file, storage): local model specs, file: text
    sources, folders (save targets, lm-eval task folders — their YAMLs are code), SQLite study files.
    Hub ids, the embedded alias, named text sources and server URLs pass through."""
    # strip first: the loaders strip too, and " /etc" must not slip past the checks below
    out = {k: v.strip() if isinstance(v, str) else v for k, v in params.items()}
    for key, kind in kinds.items():
        value = out.get(key)
        if not isinstance(value, str) or not value:
            continue
        if kind == "source":
            if value.startswith("file:"):
                out[key] = "file:" + str(confine(value[5:]))
        elif kind == "model":
            local = value.startswith((".", "/", "~")) or value.lower().endswith(".gguf")
            if local or Path(value).expanduser().exists():
                out[key] = str(confine(value))
        elif kind in ("dir", "file"):
            out[key] = str(confine(value))
        elif kind == "storage":
            out[key] = _confine_storage(value)
        else:
            raise ValueError(f"unknown path kind {kind!r} of {key}")
    return out


def _confine_storage(url: str) -> str:
    """A SQLite storage names a file (any driver: sqlite://, sqlite+pysqlite://): confined; a server URL
    passes (whether it answers is checked when the study opens)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as e:
        raise UserError(f"storage {url!r} is not a SQLAlchemy URL") from e
    if parsed.get_backend_name() != "sqlite":
        return url
    if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file:"):
        raise UserError("a run started from the app needs an SQLite storage file (sqlite:///path/studies.db)")
    return parsed.set(database=str(confine(parsed.database))).render_as_string(hide_password=False)


# ----------------------------------------------------------------------------------------------
# as the app's user types: what a run from the app may name (the messages are the app's)


def check_typed_path(path_text: str, what: str, folder: bool = False) -> None:
    """A typed path a run from the app will use: it exists, is a file (or with `folder` a folder), and lies
    inside the allowed folders (a queued run is refused elsewhere)."""
    try:
        path = Path(path_text.strip()).expanduser()
        exists = path.exists()
    except RuntimeError:  # "~user" of an unknown user
        exists = False
    if not exists:
        raise UserError(f"The {what} {path_text} does not exist.")
    if folder and not path.is_dir():
        raise UserError(f"The {what} {path_text} is a file, not a folder.")
    if not folder and path.is_dir():
        raise UserError(f"The {what} {path_text} is a folder, not a file.")
    confine(path_text)


def check_typed_model(spec: str) -> None:
    """A typed model spec, without loading anything: it resolves (the alias, a .gguf file, a model folder
    inside the allowed folders, a hub id), and a hub id that is neither cached nor of the form org/name is
    most likely a typo of the alias."""
    import difflib

    spec = (spec or "").strip()
    ref = resolve(spec)
    if ref.kind in ("dir", "gguf"):
        check_typed_path(spec, "model", folder=ref.kind == "dir")
    elif ref.kind == "hub" and ref.path is None and "/" not in spec:
        close = difflib.get_close_matches(spec.lower(), list(ALIASES), n=1, cutoff=0.6)
        raise UserError(f"'{spec}' is not a model here: not the embedded model, a local folder or .gguf file, nor a "
                        "Hugging Face model in the local cache (hub ids read org/name)"
                        + (f". Did you mean {close[0]}?" if close else "."))
