"""Saved workspaces: every tab's work, kept on disk as it happens.

A saved workspace is one tab's work: a name, and one *history* per model the tab worked
on (the model, uploaded weights or data, and the live evaluation subset make its `key`).
A history holds what the Workspace holds: the experiment log (every measured number,
each entry naming the one it came from), the plan on screen and the weights it prunes,
fine-tuned weight sets, sensitivity and fine-tuning results, and notes.

Everything is in one SQLite database (`workspaces.sqlite`, WAL mode, one transaction per
change) in the store's folder; tensors are safetensors files in `tensors/` beside it,
named by the SHA-256 of their bytes and written (to a temporary file, then renamed)
before the row that names them is committed. A process killed at any moment loses at
most the change in flight: SQLite's write-ahead log never leaves a half-written
transaction, and a tensors file no row names is removed when a workspace is deleted.

Nothing is unpickled: rows are JSON (codec.py), tensors are safetensors. A workspace
exported as one file (`export_bytes`) is a zip of the same, and `import_bytes` checks
every part of it (sizes, hashes, JSON shapes) before it adds anything.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import Tensor

from pruneviz.errors import PrunevizError

SCHEMA = 1
DB_NAME = "workspaces.sqlite"
TENSORS_DIR = "tensors"
EXPORT_FORMAT = "pruneviz-workspace"
MAX_IMPORT_BYTES = 2 * 2**30  # a workspace file's unpacked contents, at most
MAX_IMPORT_MEMBERS = 10_000
MAX_NAME = 80  # characters of a workspace's name

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workspaces (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
    current TEXT);
CREATE TABLE IF NOT EXISTS histories (
    workspace TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    key TEXT NOT NULL, identity TEXT NOT NULL, title TEXT NOT NULL,
    plan TEXT, weights TEXT, head INTEGER, notes TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (workspace, key));
CREATE TABLE IF NOT EXISTS experiments (
    workspace TEXT NOT NULL, key TEXT NOT NULL, id INTEGER NOT NULL, row TEXT NOT NULL,
    PRIMARY KEY (workspace, key, id),
    FOREIGN KEY (workspace, key) REFERENCES histories(workspace, key) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS tensors (
    workspace TEXT NOT NULL, key TEXT NOT NULL, name TEXT NOT NULL, digest TEXT NOT NULL,
    PRIMARY KEY (workspace, key, name),
    FOREIGN KEY (workspace, key) REFERENCES histories(workspace, key) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS results (
    workspace TEXT NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (workspace, key, kind),
    FOREIGN KEY (workspace, key) REFERENCES histories(workspace, key) ON DELETE CASCADE);
"""


class StoreError(PrunevizError):
    """The workspace folder cannot be used, or a saved workspace is damaged or missing."""


@dataclass(frozen=True)
class SavedInfo:
    """One saved workspace, as the list of them shows it."""

    id: str
    name: str
    created: float  # seconds since the epoch
    updated: float
    models: tuple[str, ...]  # the titles of its histories' models, current first
    experiments: int  # in all its histories


@dataclass(frozen=True)
class SavedHistory:
    """What a history holds, read back (rows still JSON: the workspace decodes them)."""

    key: str
    identity: dict[str, Any]
    title: str
    plan: str | None  # the plan on screen (JSON)
    weights: str | None  # the name of the weights it prunes
    head: int | None  # the experiment the plan on screen came from
    notes: str
    experiments: list[dict[str, Any]]  # by id
    tensors: dict[str, str] = field(default_factory=dict)  # name -> digest
    results: dict[str, Any] = field(default_factory=dict)  # kind -> JSON value


def default_root() -> Path:
    """Where workspaces are kept unless told: $PRUNEVIZ_HOME/workspaces, else the user's
    data folder ($XDG_DATA_HOME, default ~/.local/share)/pruneviz/workspaces."""
    home = os.environ.get("PRUNEVIZ_HOME")
    if home:
        return Path(home).expanduser() / "workspaces"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data).expanduser() / "pruneviz" / "workspaces"


def check_name(name: str) -> str:
    """A workspace name, stripped; refuses an empty or over-long one."""
    name = " ".join(name.split())
    if not name:
        raise StoreError("a workspace needs a name: type one")
    if len(name) > MAX_NAME:
        raise StoreError(f"a workspace name has at most {MAX_NAME} characters "
                         f"({len(name)} given)")
    return name


def tensors_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class WorkspaceStore:
    """The saved workspaces in folder `root` (made if missing). Safe to share between the
    threads of one process; several processes may open one folder (SQLite locks)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            (self.root / TENSORS_DIR).mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.root / DB_NAME, timeout=30,
                                       isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: a killed process loses nothing
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_TABLES)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot keep workspaces in {self.root}: {exc}; choose another "
                             "folder with --workspace DIR") from None
        self._lock = threading.RLock()
        with self._write() as db:
            row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
            elif int(row[0]) > SCHEMA:
                raise StoreError(f"{self.root} holds workspaces of a newer pruneviz (format "
                                 f"{row[0]}); upgrade pruneviz or use another --workspace")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction: all of it is committed, or none of it."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"the workspace database is busy or damaged: {exc}") from None
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                try:
                    self._db.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._db.execute("ROLLBACK")
                    raise StoreError(f"the change could not be saved: {exc}") from None

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"the workspace database cannot be read: {exc}") from None

    # -- workspaces ------------------------------------------------------------------------
    def create(self, name: str) -> str:
        """A new, empty workspace called `name`; returns its id."""
        id = uuid.uuid4().hex[:12]
        now = time.time()
        with self._write() as db:
            db.execute("INSERT INTO workspaces VALUES (?, ?, ?, ?, NULL)",
                       (id, check_name(name), now, now))
        return id

    def exists(self, id: str) -> bool:
        return bool(self._read("SELECT 1 FROM workspaces WHERE id=?", (id,)))

    def saved(self) -> list[SavedInfo]:
        """Every saved workspace, the last changed first."""
        found = []
        for id, name, created, updated, current in self._read(
                "SELECT id, name, created, updated, current FROM workspaces "
                "ORDER BY updated DESC"):
            titles = self._read("SELECT key, title FROM histories WHERE workspace=?", (id,))
            models = [t for k, t in titles if k == current]
            models += [t for k, t in titles if k != current and t not in models]
            count = self._read("SELECT COUNT(*) FROM experiments WHERE workspace=?", (id,))
            found.append(SavedInfo(id, name, created, updated, tuple(models), count[0][0]))
        return found

    def info(self, id: str) -> SavedInfo:
        for saved in self.saved():
            if saved.id == id:
                return saved
        raise StoreError(f"there is no saved workspace {id!r} (deleted in another tab?)")

    def rename(self, id: str, name: str) -> None:
        with self._write() as db:
            self._touch(db, id).execute("UPDATE workspaces SET name=? WHERE id=?",
                                        (check_name(name), id))

    def delete(self, id: str) -> None:
        """Remove a workspace and the tensors files no other workspace uses."""
        with self._write() as db:
            db.execute("DELETE FROM workspaces WHERE id=?", (id,))
        self.remove_unused_tensors()

    def duplicate(self, id: str, name: str) -> str:
        """A copy of workspace `id` called `name` (tensors files are shared); its id."""
        copy = uuid.uuid4().hex[:12]
        now = time.time()
        with self._write() as db:
            found = db.execute("SELECT current FROM workspaces WHERE id=?", (id,)).fetchone()
            if found is None:
                raise StoreError(f"there is no saved workspace {id!r} to copy")
            db.execute("INSERT INTO workspaces VALUES (?, ?, ?, ?, ?)",
                       (copy, check_name(name), now, now, found[0]))
            for table, columns in (("histories", "key, identity, title, plan, weights, "
                                    "head, notes"),
                                   ("experiments", "key, id, row"),
                                   ("tensors", "key, name, digest"),
                                   ("results", "key, kind, value")):
                db.execute(f"INSERT INTO {table} (workspace, {columns}) "  # noqa: S608
                           f"SELECT ?, {columns} FROM {table} WHERE workspace=?", (copy, id))
        return copy

    def _touch(self, db: sqlite3.Connection, id: str) -> sqlite3.Connection:
        """Mark workspace `id` changed now; refuses one that is gone."""
        if db.execute("UPDATE workspaces SET updated=? WHERE id=?",
                      (time.time(), id)).rowcount != 1:
            raise StoreError(f"the saved workspace {id!r} is gone (deleted in another tab?)")
        return db

    # -- a workspace's histories -------------------------------------------------------------
    def put_history(self, id: str, key: str, identity: dict[str, Any], title: str, *,
                    plan: str | None, weights: str | None, head: int | None,
                    current: bool = True) -> None:
        """Add or update history `key` of workspace `id` (and make it the current one)."""
        with self._write() as db:
            self._touch(db, id)
            db.execute("INSERT INTO histories (workspace, key, identity, title, plan, "
                       "weights, head) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(workspace, "
                       "key) DO UPDATE SET plan=excluded.plan, weights=excluded.weights, "
                       "head=excluded.head",
                       (id, key, json.dumps(identity), title, plan, weights, head))
            if current:
                db.execute("UPDATE workspaces SET current=? WHERE id=?", (key, id))

    def put_state(self, id: str, key: str, *, plan: str, weights: str, head: int) -> None:
        """The plan on screen, the weights it prunes, the experiment it came from."""
        with self._write() as db:
            self._touch(db, id)
            db.execute("UPDATE histories SET plan=?, weights=?, head=? WHERE workspace=? "
                       "AND key=?", (plan, weights, head, id, key))

    def put_notes(self, id: str, key: str, notes: str) -> None:
        with self._write() as db:
            self._touch(db, id)
            db.execute("UPDATE histories SET notes=? WHERE workspace=? AND key=?",
                       (notes, id, key))

    def put_experiments(self, id: str, key: str, rows: list[tuple[int, dict[str, Any]]]
                        ) -> None:
        """Add or replace experiments (id, row) of a history, in one transaction."""
        with self._write() as db:
            self._touch(db, id)
            db.executemany("INSERT OR REPLACE INTO experiments VALUES (?, ?, ?, ?)",
                           [(id, key, n, json.dumps(row)) for n, row in rows])

    def put_result(self, id: str, key: str, kind: str, value: Any) -> None:
        """Keep a result (plain JSON) of a history under `kind`, replacing one there."""
        text = json.dumps(value)
        with self._write() as db:
            self._touch(db, id)
            db.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?)",
                       (id, key, kind, text))

    def put_tensors(self, id: str, key: str, name: str, state: dict[str, Tensor]) -> str:
        """Keep a state dict under `name` in a history; returns its digest. The file is
        on disk before the row that names it is committed."""
        digest = self.write_tensors(state)
        with self._write() as db:
            self._touch(db, id)
            db.execute("INSERT OR REPLACE INTO tensors VALUES (?, ?, ?, ?)",
                       (id, key, name, digest))
        return digest

    def set_current(self, id: str, key: str) -> None:
        with self._write() as db:
            self._touch(db, id).execute("UPDATE workspaces SET current=? WHERE id=?",
                                        (key, id))

    def current(self, id: str) -> str | None:
        """The key of the history workspace `id` showed last."""
        rows = self._read("SELECT current FROM workspaces WHERE id=?", (id,))
        if not rows:
            raise StoreError(f"there is no saved workspace {id!r} (deleted in another tab?)")
        value = rows[0][0]
        return value if isinstance(value, str) else None

    def history_keys(self, id: str) -> list[str]:
        return [k for (k,) in self._read("SELECT key FROM histories WHERE workspace=?", (id,))]

    def history(self, id: str, key: str) -> SavedHistory | None:
        """History `key` of workspace `id`, or None if it has none by that key."""
        rows = self._read("SELECT identity, title, plan, weights, head, notes FROM histories "
                          "WHERE workspace=? AND key=?", (id, key))
        if not rows:
            return None
        identity, title, plan, weights, head, notes = rows[0]
        experiments = [json.loads(row) for (row,) in self._read(
            "SELECT row FROM experiments WHERE workspace=? AND key=? ORDER BY id", (id, key))]
        tensors = dict(self._read("SELECT name, digest FROM tensors WHERE workspace=? AND "
                                  "key=?", (id, key)))
        results = {kind: json.loads(value) for kind, value in self._read(
            "SELECT kind, value FROM results WHERE workspace=? AND key=?", (id, key))}
        return SavedHistory(key, json.loads(identity), title, plan, weights, head, notes,
                            experiments, tensors, results)

    # -- tensors files ----------------------------------------------------------------------
    def _tensors_path(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise StoreError(f"{digest[:80]!r} is not a tensors file's name")
        return self.root / TENSORS_DIR / f"{digest}.safetensors"

    def write_tensors(self, state: dict[str, Tensor]) -> str:
        """Write a state dict as a safetensors file named by its hash (once); its digest."""
        data = save_tensors({k: v.detach().cpu().contiguous() for k, v in state.items()})
        return self._write_file(data)

    def _write_file(self, data: bytes) -> str:
        digest = tensors_digest(data)
        path = self._tensors_path(digest)
        if path.exists():
            return digest
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except OSError as exc:
            Path(temporary).unlink(missing_ok=True)
            raise StoreError(f"the tensors could not be saved in {path.parent}: {exc}") from None
        return digest

    def read_tensors(self, digest: str) -> dict[str, Tensor]:
        """The state dict saved as `digest`, checked against its hash."""
        path = self._tensors_path(digest)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StoreError(f"saved tensors are missing ({path.name}): {exc}") from None
        if tensors_digest(data) != digest:
            raise StoreError(f"saved tensors are damaged ({path.name} does not match its hash)")
        return dict(load_tensors(data))

    def remove_unused_tensors(self) -> int:
        """Remove tensors files no row names, and temporary files of interrupted writes;
        returns how many files went."""
        used = {d for (d,) in self._read("SELECT DISTINCT digest FROM tensors")}
        removed = 0
        for path in (self.root / TENSORS_DIR).iterdir():
            stale = path.name.startswith(".") and path.name.endswith(".tmp")
            unused = path.suffix == ".safetensors" and path.stem not in used
            if stale or unused:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def check(self) -> str:
        """SQLite's own integrity check: "ok", or what is wrong."""
        return "; ".join(str(r[0]) for r in self._read("PRAGMA integrity_check"))

    # -- one file ----------------------------------------------------------------------------
    def export_bytes(self, id: str) -> bytes:
        """Workspace `id` as one file: a zip of its rows (JSON) and its tensors files."""
        rows = self._read("SELECT name, created, updated, current FROM workspaces WHERE id=?",
                          (id,))
        if not rows:
            raise StoreError(f"there is no saved workspace {id!r} to export")
        name, created, updated, current = rows[0]
        histories = [h for k in self.history_keys(id)
                     if (h := self.history(id, k)) is not None]
        document = {"format": EXPORT_FORMAT, "schema": SCHEMA, "name": name,
                    "created": created, "updated": updated, "current": current,
                    "histories": [_history_json(h) for h in histories]}
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("workspace.json", json.dumps(document))
            for digest in sorted({d for h in histories for d in h.tensors.values()}):
                archive.writestr(f"tensors/{digest}.safetensors",
                                 self._tensors_path(digest).read_bytes())
        return out.getvalue()

    def import_bytes(self, data: bytes, file_name: str = "the file") -> str:
        """Add the workspace exported as `data` (see export_bytes) as a new one; its id.
        Everything is checked before anything is added."""
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
            members = archive.infolist()
        except (zipfile.BadZipFile, OSError, ValueError):
            raise StoreError(f"{file_name} is not a pruneviz workspace file (not a zip); "
                             "export one from the Workspaces page") from None
        if len(members) > MAX_IMPORT_MEMBERS or sum(m.file_size for m in members) > \
                MAX_IMPORT_BYTES:
            raise StoreError(f"{file_name} unpacks to more than {MAX_IMPORT_BYTES >> 30} GiB "
                             f"or {MAX_IMPORT_MEMBERS} files: not a workspace pruneviz wrote")
        try:
            document = json.loads(archive.read("workspace.json"))
        except (KeyError, ValueError, zipfile.BadZipFile):
            raise StoreError(f"{file_name} has no readable workspace.json: not a pruneviz "
                             "workspace file") from None
        histories = _checked_document(document, file_name)
        files: dict[str, bytes] = {}
        for digest in {d for h in histories for d in h.tensors.values()}:
            self._tensors_path(digest)  # a digest, not a path
            try:
                content = archive.read(f"tensors/{digest}.safetensors")
            except (KeyError, zipfile.BadZipFile):
                raise StoreError(f"{file_name} lacks the tensors {digest[:12]}... its "
                                 "workspace names") from None
            if tensors_digest(content) != digest:
                raise StoreError(f"{file_name}: the tensors {digest[:12]}... do not match "
                                 "their hash (the file is damaged)")
            try:
                load_tensors(content)
            except Exception:  # noqa: BLE001 - any failure means the same: not tensors
                raise StoreError(f"{file_name}: {digest[:12]}... is not a safetensors "
                                 "file") from None
            files[digest] = content
        for content in files.values():
            self._write_file(content)
        id = self.create(check_name(str(document.get("name", "imported"))))
        for h in histories:
            self.put_history(id, h.key, h.identity, h.title, plan=h.plan, weights=h.weights,
                             head=h.head, current=h.key == document.get("current"))
            self.put_notes(id, h.key, h.notes)
            self.put_experiments(id, h.key, [(int(r["id"]), r) for r in h.experiments])
            for kind, value in h.results.items():
                self.put_result(id, h.key, kind, value)
            with self._write() as db:
                db.executemany("INSERT OR REPLACE INTO tensors VALUES (?, ?, ?, ?)",
                               [(id, h.key, n, d) for n, d in h.tensors.items()])
        return id


def _history_json(history: SavedHistory) -> dict[str, Any]:
    return {"key": history.key, "identity": history.identity, "title": history.title,
            "plan": history.plan, "weights": history.weights, "head": history.head,
            "notes": history.notes, "experiments": history.experiments,
            "tensors": history.tensors, "results": history.results}


def _checked_document(document: Any, file_name: str) -> list[SavedHistory]:
    """The histories of an exported workspace, each part checked for its JSON type."""
    def bad(why: str) -> StoreError:
        return StoreError(f"{file_name} is not a workspace pruneviz can read: {why}")

    if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
        raise bad("it does not say it is one")
    if not isinstance(document.get("schema"), int) or document["schema"] > SCHEMA:
        raise bad(f"format {document.get('schema')!r} (this pruneviz reads {SCHEMA})")
    raw = document.get("histories")
    if not isinstance(raw, list):
        raise bad("no list of histories")
    histories = []
    for h in raw:
        ok = (isinstance(h, dict) and isinstance(h.get("key"), str)
              and isinstance(h.get("identity"), dict) and isinstance(h.get("title"), str)
              and isinstance(h.get("plan"), str | None)
              and isinstance(h.get("weights"), str | None)
              and isinstance(h.get("head"), int | None) and isinstance(h.get("notes"), str)
              and isinstance(h.get("experiments"), list)
              and all(isinstance(r, dict) and isinstance(r.get("id"), int)
                      for r in h["experiments"])
              and isinstance(h.get("tensors"), dict)
              and all(isinstance(k, str) and isinstance(v, str)
                      for k, v in h["tensors"].items())
              and isinstance(h.get("results"), dict))
        if not ok:
            raise bad("a history is not in the expected form")
        histories.append(SavedHistory(h["key"], h["identity"], h["title"], h["plan"],
                                      h["weights"], h["head"], h["notes"], h["experiments"],
                                      h["tensors"], h["results"]))
    return histories


__all__ = ["DB_NAME", "SavedHistory", "SavedInfo", "StoreError", "WorkspaceStore",
           "check_name", "default_root"]
