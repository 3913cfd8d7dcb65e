"""Where things live on disk, and the one way files are written: atomically."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from neuronrank.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]  # neuronrank/data/paths.py -> the repository
STALE_SECONDS = 15 * 60  # a hidden temporary older than this, and not locked, is a leftover

log = logging.getLogger(__name__)


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


# ----------------------------------------------------------------------------------------------
# permissions: tempfile makes owner-only files and folders (0600 / 0700); a cache shared by a group
# needs the umask's modes, as plain open()/mkdir() would give


def current_umask() -> int:
    try:  # Linux >= 4.7: read it without changing it (os.umask is process-wide, racy with threads)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share_mode(path: Path) -> None:
    """Give a file made by tempfile the mode open() would have given it (0o666 / 0o777 & ~umask)."""
    base = 0o777 if Path(path).is_dir() else 0o666
    try:
        os.chmod(path, base & ~current_umask())
    except OSError:
        pass


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """tempfile.mkdtemp with the umask respected."""
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    share_mode(tmp)
    return tmp


# ----------------------------------------------------------------------------------------------
# leftovers of killed writers


@contextlib.contextmanager
def held(path: Path):
    """Hold an exclusive flock on a temporary file or folder while it is being written, so that
    `sweep_stale` never removes work in progress however long it takes."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pass
    try:
        yield
    finally:
        os.close(fd)


def sweep_stale(folder: Path, max_age: float = STALE_SECONDS, match=None) -> int:
    """Remove hidden temporaries (`.name...`) in `folder` that are older than `max_age` and that no
    writer holds (see `held`): what a killed run left behind. `match(path)` narrows it further (a
    user's folder holds hidden things that are not ours). Returns how many were removed."""
    removed = 0
    try:
        items = list(Path(folder).iterdir())
    except OSError:
        return 0
    now = time.time()
    for item in items:
        if not item.name.startswith(".") or item.name.endswith(".lock") or item.is_symlink():
            continue
        if match is not None and not match(item):
            continue
        try:
            if now - item.lstat().st_mtime < max_age:
                continue
            fd = os.open(item, os.O_RDONLY)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a writer holds it
            if item.is_dir():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)
            removed += 1
        finally:
            os.close(fd)
    if removed:
        log.info("removed %d stale temporary item(s) in %s", removed, folder)
    return removed


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    share_mode(Path(tmp))
    try:
        with os.fdopen(fd, "wb") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # see sweep_stale
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


# ----------------------------------------------------------------------------------------------
# SQLite files (the run store, the study storage): damage is detected, the file set aside, one warning

_checked_sqlite: set = set()  # (path, inode) of database files this process has checked


def sqlite_damaged(e: Exception) -> bool:
    """A DatabaseError about the file's contents, not about access (OperationalError: read-only,
    locked, unable to open, disk I/O, disk full)."""
    import sqlite3

    text = str(e).lower()
    if "malformed" in text or "not a database" in text or "corrupt" in text:
        return True
    return not isinstance(e, sqlite3.OperationalError)


def check_sqlite_once(db, path: Path) -> None:
    """PRAGMA quick_check on an open connection, once per process and file (path, inode): raises
    sqlite3.DatabaseError when the file is damaged anywhere (header or inner pages)."""
    import sqlite3

    try:
        ident = (str(path), Path(path).stat().st_ino)
    except OSError:
        ident = None
    if ident in _checked_sqlite:
        return
    check = db.execute("PRAGMA quick_check").fetchone()[0]
    if check != "ok":
        raise sqlite3.DatabaseError(f"database disk image is malformed ({check})")
    _checked_sqlite.add(ident)


def forget_sqlite_check(path: Path) -> None:
    """Check the file again on its next open (it was found damaged while in use)."""
    for ident in [i for i in _checked_sqlite if i and i[0] == str(path)]:
        _checked_sqlite.discard(ident)


@contextlib.contextmanager
def sqlite_lock(path: Path):
    """An exclusive lock beside an SQLite file (`<name>.lock`), for what must not race: moving a damaged
    file aside, creating the tables of a fresh one."""
    with open(Path(path).with_name(Path(path).name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def open_sqlite(path: Path, open_fn, what: str) -> str | None:
    """Run `open_fn()` (it opens `path` and raises sqlite3.DatabaseError on a damaged file, e.g. through
    check_sqlite_once). A damaged file is moved aside as `<name>.damaged-<time>` (kept, never deleted)
    under a lock and `open_fn` runs again on a fresh file; returns that notice (also logged, once), else
    None. An access problem (read-only, locked, disk full) is a UserError."""
    import sqlite3

    path = Path(path)
    try:
        open_fn()
        return None
    except sqlite3.DatabaseError as e:
        if not sqlite_damaged(e):
            raise UserError(f"{what} {path} is not usable: {e}") from e
        error = e
    # the lock and the re-check keep two processes from moving each other's fresh file
    with sqlite_lock(path):
        try:
            open_fn()  # another process has replaced it meanwhile
            return None
        except sqlite3.DatabaseError as e:
            if not sqlite_damaged(e):
                raise UserError(f"{what} {path} is not usable: {e}") from e
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = path.with_name(f"{path.name}.damaged-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
        try:
            os.rename(path, aside)
            for suffix in ("-wal", "-journal"):
                side = path.with_name(path.name + suffix)
                if side.exists():
                    os.rename(side, aside.with_name(aside.name + suffix))
            path.with_name(path.name + "-shm").unlink(missing_ok=True)
            open_fn()
        except (OSError, sqlite3.DatabaseError) as e:
            raise UserError(f"{what} {path} is damaged ({error}) and cannot be replaced: {e}") from e
    notice = (f"the {what} {path} was damaged ({str(error).splitlines()[0]}); it was moved to {aside.name} and "
              f"a fresh {what} was started")
    log.warning("%s", notice)
    return notice


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


# ----------------------------------------------------------------------------------------------
# output targets, checked before a run loads anything (an hour of work must not end in a typo)


def _probe_writable(folder: Path, flag: str, shown: str) -> None:
    """Create and remove a file in the nearest existing ancestor of `folder`."""
    anc = folder
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise UserError(f"{flag} {shown}: {anc} is not a folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=anc, prefix=".nr-probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise UserError(f"{flag} {shown}: cannot write in {anc} ({e.strerror or e})") from e


def check_output_folder(path_text: str, flag: str) -> Path:
    """A folder the run will write files into (created if missing): not an existing file, writable."""
    out = Path(str(path_text).strip()).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {path_text}: exists and is not a folder")
    _probe_writable(out, flag, str(path_text))
    return out


def check_output_file(path_text: str, flag: str) -> Path:
    """A file the run will write (replaced if present): not a folder, its folder writable."""
    out = Path(str(path_text).strip()).expanduser().resolve()
    if out.is_dir():
        raise UserError(f"{flag} {path_text}: is a folder, expected a file name")
    _probe_writable(out.parent, flag, str(path_text))
    return out


def check_model_folder(out: Path, flag: str = "--save_model") -> None:
    """A save folder is replaced whole: never one that holds other things (the repo, the cache, home),
    never an existing file or a folder of other files; and it must be writable."""
    out = Path(out).expanduser().resolve()
    for keep in (Path.cwd(), cache_dir(), Path.home(), REPO_ROOT):
        keep = keep.resolve()
        if out == keep or out in keep.parents:
            raise UserError(f"refusing to save a model over {out}: it contains {keep}")
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file()):
        raise UserError(f"{out} exists and is not a saved model; choose a new or empty folder")
    _probe_writable(out.parent, flag, str(out))
