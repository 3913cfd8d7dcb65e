"""Where things live on disk, and the one way files are written: atomically."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

from neuronrank.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """The cache root: $NEURONRANK_CACHE, else `cache/` beside the package."""
    root = Path(os.environ.get("NEURONRANK_CACHE") or REPO_ROOT / "cache").expanduser().resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cache folder {root} cannot be created: {e.strerror}") from e
    return root


def safe_name(text: str, limit: int = 48) -> str:
    """A file-name-safe rendering of a model id or source name (never a path)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"
    return name[-limit:]


def short_hash(obj) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sampled_file_hash(path: Path, piece: int = 1 << 22) -> str:
    """Size plus the first, middle and last 4 MiB: cheap for multi-GB weight files, and any
    re-quantisation or fine-tune changes these bytes."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for start in (0, max(0, size // 2 - piece // 2), max(0, size - piece)):
            f.seek(start)
            h.update(f.read(piece))
    return h.hexdigest()[:16]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def allowed_dirs() -> list[Path]:
    """Folders the app may read from or write to: $NEURONRANK_ALLOWED_DIRS (os.pathsep-separated),
    else the working directory and the cache."""
    env = os.environ.get("NEURONRANK_ALLOWED_DIRS")
    roots = [Path(p) for p in env.split(os.pathsep) if p] if env else [Path.cwd(), cache_dir()]
    return [r.expanduser().resolve() for r in roots]


def confine(path_text: str) -> Path:
    """Resolve a user-given path (links and `..` included) and refuse it outside allowed_dirs()."""
    try:
        path = Path(path_text.strip()).expanduser().resolve()
    except RuntimeError as e:  # "~user" for an unknown user
        raise UserError(f"cannot resolve path {path_text!r}") from e
    roots = allowed_dirs()
    if not any(path == r or r in path.parents for r in roots):
        raise UserError(f"{path_text} is outside the allowed folders ({', '.join(map(str, roots))}); "
                        "set NEURONRANK_ALLOWED_DIRS to allow more")
    return path


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
