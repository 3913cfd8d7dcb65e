"""The run store: every stats / prune / ppl run (and every sweep's runs) is a row in
`<cache>/runs.sqlite` — its kind, its request's parameters, status, progress, result or error.

The queue, workers and dispatcher that move rows through their statuses live in `neuronrank.jobs`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from neuronrank.errors import UserError
from neuronrank.paths import cache_dir


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
"""


class RunStore:
    """SQLite in WAL mode: readers never block the writer, each call is one short transaction, and
    every process opens its own connection (safe across the app, the dispatcher and workers)."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else cache_dir() / "runs.sqlite"
        try:
            with self._connect() as db:
                db.executescript(_SCHEMA)
        except Exception as e:  # sqlite3.OperationalError: read-only folder, disk full, not a database
            raise UserError(f"run store {self.path} is not usable: {e}") from e

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
        d["params"] = json.loads(d["params"])
        d["result"] = json.loads(d["result"]) if d["result"] else None
        return d

    def create(self, kind: str, params: dict, status: str = "queued", group: str | None = None,
               origin: str = "app", pid: int | None = None) -> int:
        now = time.time()
        with self._connect() as db:
            cur = db.execute(
                "INSERT INTO runs(kind, params, status, grp, origin, pid, created, started) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (kind, json.dumps(params, sort_keys=True, default=str), status, group, origin, pid, now,
                 now if status == "running" else None))
            return int(cur.lastrowid)

    def get(self, run_id: int) -> dict:
        with self._connect() as db:
            row = self._row(db.execute("SELECT * FROM runs WHERE id=?", (int(run_id),)).fetchone())
        if row is None:
            raise UserError(f"no run with id {run_id}")
        return row

    def list(self, limit: int = 500, kind: str | None = None, group: str | None = None) -> list[dict]:
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

    def claim_next(self, pid: int) -> dict | None:
        """Atomically move the oldest queued run to running (one claimer wins)."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            r = db.execute("SELECT id FROM runs WHERE status='queued' ORDER BY id LIMIT 1").fetchone()
            if r is None:
                db.execute("COMMIT")
                return None
            # pid stays NULL until the worker exists (set_pid): cancel must never signal the dispatcher
            db.execute("UPDATE runs SET status='running', pid=NULL, started=?, message='starting' WHERE id=?",
                       (time.time(), r["id"]))
            db.execute("COMMIT")
        return self.get(r["id"])

    def set_pid(self, run_id: int, pid: int) -> None:
        with self._connect() as db:
            db.execute("UPDATE runs SET pid=? WHERE id=?", (pid, int(run_id)))

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
            return cur.rowcount == 1

    def queued_count(self) -> int:
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM runs WHERE status='queued'").fetchone()[0]

    def running(self) -> list[dict]:
        with self._connect() as db:
            return [self._row(r) for r in db.execute("SELECT * FROM runs WHERE status='running'").fetchall()]


class _Closing:
    """`with` that commits nothing implicitly (autocommit) and always closes the connection."""

    def __init__(self, db):
        self.db = db

    def __enter__(self):
        return self.db

    def __exit__(self, *exc):
        self.db.close()
        return False
