"""The statistics cache: one folder per entry under `<cache>/stats/<key>/`.

An entry is `stats.parquet` (the per-neuron table, raw sums included), `extra.npz` (input norms,
top-k, calibration tokens; loaded with allow_pickle=False) and `manifest.json` (the key, sizes and
sha256 of both files). It is written into a temporary folder and renamed into place, so an entry
either exists whole or not at all; a second writer of the same key loses the rename and keeps the
first. Every load (`load_stats`, the CLI's and the app's one path) checks sizes and sha256: a
truncated or edited entry is reported and recomputed, never silently used. Hidden temporary
folders left by a killed writer are removed on the next write or listing (`paths.sweep_stale`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from neuronrank.errors import UserError
from neuronrank.data.paths import cache_dir, file_sha256, held, make_temp_dir, share_mode, short_hash, sweep_stale
from neuronrank.analysis.neuron_stats import FORMAT_VERSION, INPUT_NORMS, NeuronStats

log = logging.getLogger(__name__)

_PER_NEURON = ("sum_abs", "sum_act", "sum_sq", "n_active", "w_norm", "up_norm", "down_norm", "down_abs_mean")


class CorruptEntry(Exception):
    """A cache entry whose files do not match its manifest (the message starts with its key)."""

    @property
    def key(self) -> str:
        return str(self).split(":", 1)[0]


@dataclass(frozen=True)
class Entry:
    key: str
    path: Path
    manifest: dict

    @property
    def params(self) -> dict:
        return self.manifest["params"]

    @property
    def size_bytes(self) -> int:
        return sum(f["size"] for f in self.manifest["files"].values())

    @property
    def created(self) -> float:
        return self.manifest["created"]


def stats_key(params: dict) -> str:
    """Everything that changes the numbers goes into `params`; the statistics format too."""
    return short_hash({**params, "format_version": FORMAT_VERSION})


def stats_root() -> Path:
    return cache_dir() / "stats"


def _write_stats_files(stats: NeuronStats, folder: Path) -> dict:
    frame = stats.to_frame()
    frame.to_parquet(folder / "stats.parquet", index=False)
    arrays = {f"input_sq.{k}": v for k, v in stats.input_sq.items()}
    arrays.update({f"input_sum.{k}": v for k, v in stats.input_sum.items()})
    arrays.update({f"fluct.{k}": v for k, v in stats.fluct.items()})
    arrays.update(tokens=stats.tokens, top_vals=stats.top_vals, top_window=stats.top_window,
                  top_pos=stats.top_pos)
    if stats.windows is not None:
        arrays["windows"] = stats.windows
    np.savez(folder / "extra.npz", **arrays)
    return {name: {"size": (folder / name).stat().st_size, "sha256": file_sha256(folder / name)}
            for name in ("stats.parquet", "extra.npz")}


def save_stats(params: dict, stats: NeuronStats) -> Entry:
    key = stats_key(params)
    root = stats_root()
    target = root / key
    try:
        root.mkdir(parents=True, exist_ok=True)
        sweep_stale(root)
        tmp = make_temp_dir(root, prefix=f".{key}.")
    except OSError as e:
        raise UserError(f"cannot write to the cache folder {root}: {e.strerror}") from e
    try:
        with held(tmp):
            _write_entry(key, params, stats, tmp, target)
    except OSError as e:
        raise UserError(f"cannot write cache entry in {root}: {e.strerror or e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Entry(key, target, json.loads((target / "manifest.json").read_text()))


def _write_entry(key: str, params: dict, stats: NeuronStats, tmp: Path, target: Path) -> None:
    """Files, manifest and fsync in `tmp`, then one rename into place (the first writer wins)."""
    files = _write_stats_files(stats, tmp)
    manifest = {"key": key, "format_version": FORMAT_VERSION, "params": params, "files": files,
                "created": time.time(), "meta": stats.meta, "first_window": stats.first_window,
                "shape": list(stats.sum_abs.shape)}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    for f in tmp.iterdir():
        share_mode(f)
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if target.exists() and not _valid(target):
        shutil.rmtree(target, ignore_errors=True)
    try:
        os.rename(tmp, target)
    except OSError:
        if not target.exists():  # not a lost race: a real failure (disk full, read-only)
            raise
        log.info("cache entry %s was written concurrently; keeping the first", key)


def _read_manifest(folder: Path) -> dict:
    """The entry's manifest, or CorruptEntry when it is unreadable or not one (binary garbage, `{}`, `[]`,
    a field of the wrong type): everything the listing and the loaders read of it is checked here."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: JSONDecodeError and UnicodeDecodeError
        raise CorruptEntry(f"{folder.name}: manifest unreadable ({type(e).__name__})") from e
    problem = _manifest_problem(manifest)
    if problem:
        raise CorruptEntry(f"{folder.name}: manifest unreadable ({problem})")
    return manifest


def _manifest_problem(m) -> str | None:
    if not isinstance(m, dict):
        return f"a JSON {type(m).__name__}, not an object"
    if not isinstance(m.get("params"), dict):
        return "no params"
    if not isinstance(m.get("created"), (int, float)) or isinstance(m.get("created"), bool):
        return "no creation time"
    files = m.get("files")
    if not isinstance(files, dict) or set(files) != {"stats.parquet", "extra.npz"} or not all(
            isinstance(f, dict) and isinstance(f.get("size"), int) and isinstance(f.get("sha256"), str)
            for f in files.values()):
        return "no file list"
    shape = m.get("shape")
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int) and v > 0 for v in shape)):
        return "no shape"
    if not isinstance(m.get("meta", {}), dict):
        return "meta is not an object"
    return None


_reported: set = set()  # (folder, mtime) of damaged entries this process has reported


def _report_once(folder: Path, error: CorruptEntry) -> None:
    try:
        ident = (str(folder), (folder / "manifest.json").stat().st_mtime_ns)
    except OSError:
        ident = (str(folder), None)
    if ident not in _reported:
        _reported.add(ident)
        log.warning("cache entry skipped: %s (a run with its parameters computes it again)", error)


def _check(folder: Path, manifest: dict, deep: bool) -> None:
    for name, info in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != info["size"]:
            raise CorruptEntry(f"{folder.name}: {name} is missing or truncated")
        if deep and file_sha256(path) != info["sha256"]:
            raise CorruptEntry(f"{folder.name}: {name} does not match its manifest")


def _valid(folder: Path) -> bool:
    try:
        _check(folder, _read_manifest(folder), deep=True)
        return True
    except CorruptEntry:
        return False


def has_candidate(params: dict) -> bool:
    """Could an entry for these parameters exist, whatever its token checksum? (A manifest scan:
    lets a miss skip loading the tokenizer twice.)"""
    want = {k: v for k, v in params.items() if k != "tokens_sha256"}
    want = json.loads(json.dumps(want, sort_keys=True, default=str))  # as a manifest stores it
    for entry in list_entries():
        have = {k: v for k, v in entry.params.items() if k != "tokens_sha256"}
        if have == want:
            return True
    return False


def find_stats(params: dict) -> Entry | None:
    """The entry for these parameters, if one exists and looks whole (sizes); a damaged one is removed.
    Its contents are verified (sha256) when it is loaded: `load_stats`."""
    key = stats_key(params)
    folder = stats_root() / key
    if not folder.exists():
        return None
    try:
        manifest = _read_manifest(folder)
        _check(folder, manifest, deep=False)
    except CorruptEntry as e:
        log.warning("cache entry corrupt, recomputing: %s", e)
        delete_entry(key, missing_ok=True)
        return None
    return Entry(key, folder, manifest)


def load_stats(entry: Entry | str) -> NeuronStats:
    """The one load path (CLI, workers, app): sizes and sha256 against the manifest first, so a
    damaged file raises CorruptEntry instead of showing numbers."""
    if isinstance(entry, str):
        entry = get_entry(entry)
    folder = entry.path
    _check(folder, entry.manifest, deep=True)
    try:
        frame = pd.read_parquet(folder / "stats.parquet", columns=list(_PER_NEURON))  # the rest is derived
        with np.load(folder / "extra.npz", allow_pickle=False) as z:
            extra = {k: z[k] for k in z.files}
    except Exception as e:  # pyarrow / zipfile raise many types on damaged files
        raise CorruptEntry(f"{entry.key}: unreadable ({type(e).__name__})") from e
    L, n = entry.manifest["shape"]
    grid = {c: frame[c].to_numpy().reshape(L, n) for c in _PER_NEURON}
    meta = entry.manifest.get("meta", {})
    return NeuronStats(
        site=meta.get("site", entry.params.get("site", "gate")), tokens=extra["tokens"],
        input_sq={k: extra[f"input_sq.{k}"] for k in INPUT_NORMS if f"input_sq.{k}" in extra},
        top_vals=extra["top_vals"], top_window=extra["top_window"], top_pos=extra["top_pos"],
        windows=extra.get("windows"), first_window=entry.manifest.get("first_window", 0),
        meta=meta, **grid,
        # absent from entries written before the down_proj input moments were collected
        input_sum={k.split(".", 1)[1]: v for k, v in extra.items() if k.startswith("input_sum.")},
        fluct={k.split(".", 1)[1]: v for k, v in extra.items() if k.startswith("fluct.")},
    )


def get_entry(key: str) -> Entry:
    if not key or "/" in key or key.startswith("."):
        raise UserError(f"no cache entry {key!r}")
    folder = stats_root() / key
    if not folder.is_dir():
        raise UserError(f"no cache entry {key!r}")
    try:
        return Entry(key, folder, _read_manifest(folder))
    except CorruptEntry as e:
        raise UserError(str(e)) from e


def list_entries() -> list[Entry]:
    """Intact-looking entries, newest first (hidden temporary folders are skipped)."""
    root = stats_root()
    out = []
    if root.is_dir():
        sweep_stale(root)
        for folder in root.iterdir():
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            try:
                manifest = _read_manifest(folder)
                _check(folder, manifest, deep=False)
            except CorruptEntry as e:  # one damaged entry never takes the listing down
                _report_once(folder, e)
                continue
            out.append(Entry(folder.name, folder, manifest))
    return sorted(out, key=lambda e: e.created, reverse=True)


def delete_entry(key: str, missing_ok: bool = False) -> None:
    folder = stats_root() / key
    if folder.parent != stats_root() or not folder.exists():
        if missing_ok:
            return
        raise UserError(f"no cache entry {key!r}")
    # rename first so a concurrent reader never sees a half-deleted folder
    trash = folder.with_name(f".del-{key}-{os.getpid()}")
    try:
        os.rename(folder, trash)
    except FileNotFoundError:  # deleted meanwhile by someone else
        if missing_ok:
            return
        raise UserError(f"no cache entry {key!r}") from None
    shutil.rmtree(trash, ignore_errors=True)
