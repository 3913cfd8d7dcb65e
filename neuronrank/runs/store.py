"""The run store: every stats / prune / ppl run (and every sweep's runs) is a row in
`<cache>/runs.sqlite` — its kind, its request's parameters, status, progress, result or error.

The queue, workers and dispatcher that move rows through their statuses live in `neuronrank.queue.jobs`.

Nothing stays stranded: every read (`get`, `list`, `running`) first marks failed the runs of this
host whose process is gone. A process is identified by its pid *and* its start time (from
/proc/PID/stat), so a reused pid cannot keep a dead run "running". A run claimed by a dispatcher
is left to that dispatcher while it is alive (it records the worker's exit status itself).

A sweep (the Prune page's two-exponent landscape) is a row of `sweeps`: the two axes the user chose, their
values and the run of every cell — a run queued for it, or an identical finished run reused (the same
normalized request gives the same numbers: `find_same`).

Pages that only watch for runs started elsewhere read `stamp()` (two stat() calls, no query) and query
`activity()` (one small query) only when the stamp moved. Every write that changes which runs exist or are
active (a run created, claimed, finished, reaped — not a progress write) also replaces a small text file,
`activity_file()` (`runs-activity/stamp` beside the database: a new value each time, written atomically), alone
in its folder so that a web server can hand it to browsers: a browser that polls it learns of a change without
any query or script run.

A damaged database file (truncated, overwritten) is detected when the store opens, moved aside as
`runs.sqlite.damaged-<time>` (kept, never deleted), and a fresh store is started with one warning
(`paths.open_sqlite`: the rule the study storage follows too).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from neuronrank.errors import UserError
from neuronrank.data.paths import cache_dir, check_sqlite_once, open_sqlite

log = logging.getLogger(__name__)

DAMAGED_RECORD = "damaged record: its stored request or result is unreadable"
_damaged_seen: set[int] = set()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind      TEXT NOT NULL,
    params    TEXT NOT NULL,
    status    TEXT NOT NULL,
    progress  REAL NOT NULL DEFAULT 0,
    message   TEXT NOT NULL DEFAULT '',
    result    TEXT,
    error     TEXT,
    grp       TEXT,
    origin    TEXT NOT NULL DEFAULT 'app',
    pid       INTEGER,
    created   REAL NOT NULL,
    started   REAL,
    finished  REAL
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status, id);
CREATE TABLE IF NOT EXISTS sweeps (
    grp      TEXT PRIMARY KEY,
    x        TEXT NOT NULL,
    y        TEXT NOT NULL,
    xs       TEXT NOT NULL,
    ys       TEXT NOT NULL,
    cells    TEXT NOT NULL,
    created  REAL NOT NULL
);
"""
# added later; an older store gains them on open
_COLUMNS = {"pid_start": "INTEGER", "host": "TEXT", "slot": "INTEGER", "owner": "INTEGER",
            "owner_start": "INTEGER", "meta": "TEXT"}
CLAIM_GRACE = 120.0  # a claimed run of an older store (no owner recorded) gets this long to start
_HOST = socket.gethostname()


# ----------------------------------------------------------------------------------------------
# processes: a pid together with its start time


def process_start(pid: int | None) -> int | None:
    """Start time of a process in clock ticks since boot (/proc/PID/stat field 22); None if gone."""
    if not pid:
        return None
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError, ValueError):
        return None
    if fields[0] in ("Z", "X"):  # a zombie has finished
        return None
    return int(fields[19])


def process_alive(pid: int | None, start: int | None) -> bool:
    """Is the process that was `pid` (started at `start`) still running? Without /proc (not Linux)
    fall back to the pid alone."""
    if not pid:
        return False
    if not os.path.isdir("/proc/self"):  # pragma: no cover - non-Linux
        try:
            os.kill(int(pid), 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    now = process_start(pid)
    return now is not None and (start is None or now == int(start))


class RunStore:
    """SQLite in WAL mode: readers never block the writer, each call is one short transaction, and
    every process opens its own connection (safe across the app, the dispatcher and workers)."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else default_path()
        self.notice: str | None = open_sqlite(self.path, self._open, "run store")  # set when moved aside
        if self.notice or not activity_file(self.path).exists():  # a fresh store's stamp (watchers fetch it)
            self.changed()

    def _open(self) -> None:
        with self._connect() as db:
            db.executescript(_SCHEMA)
            have = {r["name"] for r in db.execute("PRAGMA table_info(runs)")}
            for name, kind in _COLUMNS.items():
                if name not in have:
                    try:
                        db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
                    except Exception as e:  # a concurrent opener added it first
                        if "duplicate column" not in str(e):
                            raise
            check_sqlite_once(db, self.path)

    def _connect(self):
        import sqlite3

        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=30000")
        return _Closing(db)

    @staticmethod
    def _row(r) -> dict | None:
        if r is None:
            return None
        d = dict(r)
        try:
            d["params"] = json.loads(d["params"])
            d["result"] = json.loads(d["result"]) if d["result"] else None
            if not isinstance(d["params"], dict) or not isinstance(d["result"], (dict, type(None))):
                raise ValueError("not an object")
        except (ValueError, TypeError):  # a record damaged in the file: shown as a failed run, said once
            if d["id"] not in _damaged_seen:
                _damaged_seen.add(d["id"])
                log.warning("run %s: its stored request or result is unreadable; shown as failed", d["id"])
            d.update(params={}, result=None, status="failed", error=DAMAGED_RECORD)
        try:  # what the app noted beside the request (e.g. the estimate shown when "measure this point" queued it)
            d["meta"] = json.loads(d["meta"]) if d.get("meta") else None
        except ValueError:
            d["meta"] = None
        return d

    def create(self, kind: str, params: dict, status: str = "queued", group: str | None = None,
               origin: str = "app", pid: int | None = None, meta: dict | None = None) -> int:
        """`meta`: a note kept beside the request, not part of it (the worker never reads it)."""
        now = time.time()
        with self._connect() as db:
            cur = db.execute(
                "INSERT INTO runs(kind, params, status, grp, origin, pid, pid_start, host, created, started, meta) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (kind, json.dumps(params, sort_keys=True, default=str), status, group, origin, pid,
                 process_start(pid), _HOST, now, now if status == "running" else None,
                 None if meta is None else json.dumps(meta, sort_keys=True)))
        self.changed()
        return int(cur.lastrowid)

    def reap(self) -> int:
        """Mark failed the running runs of this host whose process is gone (pid and start time
        checked). Runs a live dispatcher owns are its business. Returns how many were marked."""
        n = 0
        with self._connect() as db:
            rows = db.execute("SELECT id, pid, pid_start, host, owner, owner_start, started FROM runs "
                              "WHERE status='running'").fetchall()
            for r in rows:
                if r["host"] not in (None, _HOST):
                    continue  # another machine sharing this cache: its processes are not ours to see
                if r["owner"] and process_alive(r["owner"], r["owner_start"]):
                    continue
                if r["pid"]:
                    if process_alive(r["pid"], r["pid_start"]):
                        continue
                    why = f"its process (pid {r['pid']}) is gone: killed or crashed"
                elif r["owner"]:
                    why = "its dispatcher stopped before the worker started"
                elif time.time() - (r["started"] or 0) < CLAIM_GRACE:
                    continue  # an older dispatcher claimed it a moment ago
                else:
                    why = "no worker process was started for it"
                cur = db.execute("UPDATE runs SET status='failed', error=?, finished=? WHERE id=? AND "
                                 "status='running'", (f"the run stopped without an outcome: {why}",
                                                      time.time(), r["id"]))
                n += cur.rowcount
        if n:
            log.warning("marked %d run(s) failed whose process is gone", n)
            self.changed()
        return n

    def get(self, run_id: int) -> dict:
        try:
            rid = int(run_id)
        except (TypeError, ValueError):
            rid = 0
        if not 1 <= rid <= 2**63 - 1:  # beyond SQLite's INTEGER no run can exist (and binding it overflows)
            raise UserError(f"no run with id {str(run_id)[:40]}")
        self.reap()
        with self._connect() as db:
            row = self._row(db.execute("SELECT * FROM runs WHERE id=?", (rid,)).fetchone())
        if row is None:
            raise UserError(f"no run with id {run_id}")
        return row

    def list(self, limit: int = 500, kind: str | None = None, group: str | None = None) -> list[dict]:
        self.reap()
        q, args = "SELECT * FROM runs", []
        conds = []
        if kind:
            conds.append("kind=?"), args.append(kind)
        if group:
            conds.append("grp=?"), args.append(group)
        if conds:
            q += " WHERE " + " AND ".join(conds)
        q += " ORDER BY id DESC LIMIT ?"
        with self._connect() as db:
            return [self._row(r) for r in db.execute(q, (*args, int(limit))).fetchall()]

    def get_many(self, ids) -> list[dict]:
        """The runs with these ids, in the order given (missing ones left out)."""
        ids = [int(i) for i in ids]
        if not ids:
            return []
        self.reap()
        with self._connect() as db:
            rows = {r["id"]: self._row(r) for r in db.execute(
                f"SELECT * FROM runs WHERE id IN ({','.join('?' * len(ids))})", ids).fetchall()}
        return [rows[i] for i in ids if i in rows]

    def find_same(self, kind: str, params: dict, statuses: tuple[str, ...] = ("done", "running", "queued")) -> dict | None:
        """A run of `kind` with exactly these stored parameters in one of `statuses` (a finished one first,
        then the newest), or None: what a sweep reuses instead of measuring the same cell again."""
        text = json.dumps(params, sort_keys=True, default=str)
        marks = ",".join("?" * len(statuses))
        with self._connect() as db:
            row = db.execute(f"SELECT id FROM runs WHERE kind=? AND params=? AND status IN ({marks}) "
                             "ORDER BY status='done' DESC, id DESC LIMIT 1", (kind, text, *statuses)).fetchone()
        return None if row is None else self.get(row["id"])

    # ------------------------------------------------------------------------------------------
    # sweeps: the axes the user chose and the run of every cell

    def create_sweep(self, group: str, x: str, y: str, xs, ys, cells: list[dict]) -> None:
        """`cells`: one {"x": value, "y": value, "run": id, "reused": bool} per grid cell."""
        with self._connect() as db:
            db.execute("INSERT INTO sweeps(grp, x, y, xs, ys, cells, created) VALUES (?,?,?,?,?,?,?)",
                       (group, x, y, json.dumps([float(v) for v in xs]), json.dumps([float(v) for v in ys]),
                        json.dumps(cells), time.time()))

    def sweeps(self) -> list[dict]:
        """Every stored sweep, newest first: group, x, y, xs, ys, cells, created."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM sweeps ORDER BY created DESC").fetchall()
        out = []
        for r in rows:
            d = dict(r)
            for k in ("xs", "ys", "cells"):
                d[k] = json.loads(d[k])
            d["group"] = d.pop("grp")
            out.append(d)
        return out

    # ------------------------------------------------------------------------------------------
    # what a watching page reads

    def stamp(self) -> tuple:
        """Changes whenever anything is written (the database and its write-ahead log: size and mtime)."""
        return stamp(self.path)

    def changed(self) -> None:
        """Say that the runs' activity changed: a new value in `activity_file()` (after the write committed)."""
        touch_activity(self.path)

    def activity(self, kind: str | None = None) -> tuple:
        """The newest run id and the (id, status) of every queued or running run (of `kind`): what a page
        that shows runs started elsewhere compares between polls. One small query, no reaping."""
        q = "SELECT id, status FROM runs WHERE status IN ('queued','running')" + (" AND kind=?" if kind else "")
        args = (kind,) if kind else ()
        with self._connect() as db:
            newest = db.execute("SELECT MAX(id) FROM runs" + (" WHERE kind=?" if kind else ""), args).fetchone()[0]
            active = tuple((r["id"], r["status"]) for r in db.execute(q + " ORDER BY id", args).fetchall())
        return newest, active

    def claim_next(self, pid: int, slot: int = 0) -> dict | None:
        """Atomically move the oldest queued run to running (one claimer wins); `pid` is the
        claiming dispatcher, recorded as the run's owner, `slot` the device slot it runs in."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            r = db.execute("SELECT id FROM runs WHERE status='queued' ORDER BY id LIMIT 1").fetchone()
            if r is None:
                db.execute("COMMIT")
                return None
            # pid stays NULL until the worker exists (set_pid): cancel must never signal the dispatcher
            db.execute("UPDATE runs SET status='running', pid=NULL, pid_start=NULL, owner=?, owner_start=?, "
                       "host=?, slot=?, started=?, message='starting' WHERE id=?",
                       (pid, process_start(pid), _HOST, slot, time.time(), r["id"]))
            db.execute("COMMIT")
        self.changed()
        return self.get(r["id"])

    def set_pid(self, run_id: int, pid: int) -> None:
        with self._connect() as db:
            db.execute("UPDATE runs SET pid=?, pid_start=? WHERE id=?", (pid, process_start(pid), int(run_id)))

    def progress(self, run_id: int, fraction: float, message: str = "") -> None:
        with self._connect() as db:
            db.execute("UPDATE runs SET progress=?, message=? WHERE id=? AND status='running'",
                       (max(0.0, min(1.0, float(fraction))), message, int(run_id)))

    def finish(self, run_id: int, status: str, result: dict | None = None, error: str | None = None,
               only_if: tuple[str, ...] = ("running", "queued")) -> bool:
        """Set a final status, unless the run already left `only_if` (e.g. it was cancelled)."""
        assert status in ("done", "failed", "cancelled")
        marks = ",".join("?" * len(only_if))
        with self._connect() as db:
            cur = db.execute(
                f"UPDATE runs SET status=?, result=?, error=?, finished=?, "
                f"progress=CASE WHEN ?='done' THEN 1 ELSE progress END WHERE id=? AND status IN ({marks})",
                (status, json.dumps(result, default=str) if result is not None else None, error, time.time(),
                 status, int(run_id), *only_if))
            done = cur.rowcount == 1
        if done:
            self.changed()
        return done

    def queued_count(self) -> int:
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM runs WHERE status='queued'").fetchone()[0]

    def running(self) -> list[dict]:
        self.reap()
        with self._connect() as db:
            return [self._row(r) for r in db.execute("SELECT * FROM runs WHERE status='running'").fetchall()]


def stamp(path: Path) -> tuple:
    """(size, mtime) of an SQLite file and of its -wal: every committed write moves one of them."""
    out = []
    for p in (Path(path), Path(str(path) + "-wal")):
        try:
            st = p.stat()
            out += [st.st_size, st.st_mtime_ns]
        except OSError:
            out += [None, None]
    return tuple(out)


def default_path() -> Path:
    return cache_dir() / "runs.sqlite"


def activity_file(path: Path | None = None) -> Path:
    """The change stamp of the run store at `path` (default: the cache's): `<dir>/<name>-activity/stamp`. Its folder
    holds nothing else, so it can be served to browsers as it is."""
    path = Path(path) if path else default_path()
    return path.parent / f"{path.stem}-activity" / "stamp"


def read_activity(path: Path | None = None) -> str:
    """The stamp's current value ("" before the first change)."""
    try:
        return activity_file(path).read_text()
    except OSError:
        return ""


_touch_failed = False


def touch_activity(path: Path | None = None) -> None:
    """Give the stamp a new value: written to a temporary file in the same folder and renamed over it (readers see
    the old value or the new one, never a part). ~50 µs. A stamp that cannot be written (a read-only or full disk)
    is said once in the log and never fails the store's write: watching pages then learn of the change later."""
    global _touch_failed
    f = activity_file(path)
    tmp = f.with_name(f".stamp.{os.getpid()}.{time.monotonic_ns()}")
    try:
        f.parent.mkdir(exist_ok=True)
        tmp.write_text(f"{time.time_ns()}.{os.getpid()}")
        os.replace(tmp, f)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if not _touch_failed:
            _touch_failed = True
            log.warning("could not write the run store's change stamp %s: %s", f, e)


class _Closing:
    """`with` that commits nothing implicitly (autocommit) and always closes the connection."""

    def __init__(self, db):
        self.db = db

    def __enter__(self):
        return self.db

    def __exit__(self, *exc):
        self.db.close()
        return False
