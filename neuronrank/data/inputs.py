"""What a request names on disk, checked before a run is queued or loads anything.

    check_inputs(req)       the model spec resolves, every file: text source is a file, every output
                            target is writable (an hour of work must not end in a typo)
    confine_params(params)  the app's runs: every path a run names lies inside the allowed folders
                            (a browser user must not reach arbitrary files of the server)
"""

from __future__ import annotations

from pathlib import Path

from neuronrank.data.paths import check_model_folder, check_output_folder, confine
from neuronrank.data.specs import resolve
from neuronrank.errors import UserError


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
    # output targets, before any model loads: a typo must not cost the run
    if getattr(req, "save", None):
        check_output_folder(req.save, "--save")
    if getattr(req, "save_model", None):
        check_model_folder(Path(req.save_model), "--save_model")


def confine_params(params: dict) -> dict:
    """Apply confine() to every path a run's parameters name: local model specs, file: text sources,
    save folders. Hub ids and the embedded alias pass through."""
    # strip first: the loaders strip too, and " /etc" must not slip past the checks below
    out = {k: v.strip() if isinstance(v, str) else v for k, v in params.items()}
    for key in ("calib", "eval"):
        if isinstance(out.get(key), str) and out[key].startswith("file:"):
            out[key] = "file:" + str(confine(out[key][5:]))
    model = out.get("model")
    if isinstance(model, str) and (model.startswith((".", "/", "~")) or model.lower().endswith(".gguf")
                                   or Path(model).expanduser().exists()):
        out["model"] = str(confine(model))
    for key in ("save", "save_model"):
        if out.get(key):
            out[key] = str(confine(out[key]))
    storage = out.get("storage")
    if isinstance(storage, str) and storage.startswith("sqlite:///"):  # a search study's file
        out["storage"] = "sqlite:///" + str(confine(storage[len("sqlite:///"):]))
    return out
