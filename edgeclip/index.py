"""`PhotoIndex`: a crash-safe, incremental SQLite index of image embeddings, searched by text and/or image.

One row per file (path, size, mtime, embedding); the identity of the bundle that made the embeddings
(model id and graph sha256s) is stored once and an index refuses embeddings from another bundle.
Every batch is committed in its own transaction (WAL journal), so a killed run leaves a valid index
that the next run continues. Files that fail to decode are recorded with their size and mtime and are
not retried until they change.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
from PIL import Image

from edgeclip.bundle import Bundle
from edgeclip.errors import BundleError, EdgeclipError, InputError
from edgeclip.files import atomic_path
from edgeclip.preprocess import ALLOWED_FORMATS
from edgeclip.search import Match, VectorMatrix, combine_queries

SCHEMA_VERSION = 1
STORE_DTYPE = "float16"  # embeddings on disk; see docs/search.md for the float16/float32 measurements
DEFAULT_BATCH = 32  # images per encoder call and per committed transaction
PathLike = Union[str, Path]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS photos (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    embedding BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS failures (
    path TEXT PRIMARY KEY,
    size INTEGER,
    mtime_ns INTEGER,
    error TEXT NOT NULL
);
"""


class PhotoIndexError(EdgeclipError):
    """An index file is not an edgeclip photo index, or comes from a newer edgeclip."""


class BundleMismatchError(BundleError):
    """Embeddings from one bundle were about to be mixed with an index built by another."""


def bundle_identity(bundle: Bundle) -> str:
    """The canonical identity of the embeddings a bundle makes: model id, embedding size and graph sha256s."""
    graphs = {name: spec.get("sha256") for name, spec in sorted(bundle.towers.items())}
    return json.dumps({"model_id": bundle.model_id, "embed_dim": bundle.embed_dim, "graphs": graphs},
                      sort_keys=True, separators=(",", ":"))


def describe_identity(identity: str) -> str:
    """A short human description of a bundle identity: 'demo (image 5cf6870f…, text 1a2b3c4d…)'."""
    data = json.loads(identity)
    graphs = ", ".join(f"{k} {str(v)[:8]}…" for k, v in data.get("graphs", {}).items())
    return f"{data.get('model_id')} ({graphs})"


def image_extensions() -> frozenset[str]:
    """File name suffixes (lower case, with the dot) of the image formats the runtime opens."""
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in ALLOWED_FORMATS)


def scan_images(roots: Sequence[PathLike]) -> dict[str, tuple[int, int]]:
    """{absolute path: (size, mtime_ns)} of the image files under `roots` (folders recursively, hidden
    names skipped; files given directly are taken whatever their suffix). A missing root is an InputError."""
    exts = image_extensions()
    found: dict[str, tuple[int, int]] = {}

    def add(path: str) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return  # vanished while scanning: it is simply not there
        found[path] = (st.st_size, st.st_mtime_ns)

    for root in roots:
        root = os.path.abspath(os.path.expanduser(str(root)))
        if os.path.isfile(root):
            add(root)
        elif os.path.isdir(root):
            for folder, dirs, files in os.walk(root):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith(".") and os.path.splitext(name)[1].lower() in exts:
                        add(os.path.join(folder, name))
        else:
            raise InputError(f"{root} does not exist (nothing was changed in the index; "
                             f"remove its photos with PhotoIndex.remove if it is gone for good)")
    return found


def _is_utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes in a POSIX file name (os.fsdecode's surrogates)
        return False
    return True


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def embed_stream(encoder: Any, items: Iterable[Any], batch_size: int = DEFAULT_BATCH
                 ) -> Iterator[tuple[Any, Optional[np.ndarray], Optional[str]]]:
    """(item, unit embedding or None, error or None) for each image item, in input order, through the
    encoder's streaming path (decoding overlaps inference); a file that cannot be read becomes an error
    and never stops the stream."""
    items = list(items)
    if not items:  # nothing to embed: no tower is opened
        return
    errors: dict[int, str] = {}
    done = 0

    def failed(index: int, item: Any, error: Exception) -> None:
        errors[index] = str(error)

    for where, vectors in encoder.embed_images(items, batch_size=batch_size, on_error=failed, with_index=True):
        for i, vector in zip(where.tolist(), vectors):
            for j in range(done, i):  # the items before this row that failed
                yield items[j], None, errors.pop(j)
            yield items[i], vector, None
            done = i + 1
    for j in range(done, len(items)):
        yield items[j], None, errors.pop(j)


@dataclass
class UpdateReport:
    """What one `PhotoIndex.update` did; paths are listed for everything that changed."""

    scanned: int = 0
    unchanged: int = 0
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    still_broken: int = 0
    seconds: float = 0.0

    @property
    def embedded(self) -> int:
        return len(self.added) + len(self.changed)

    @property
    def images_per_second(self) -> float:
        tried = self.embedded + len(self.failed)
        return tried / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict:
        """The report as JSON-ready data (counts, images/s and the lists)."""
        data = asdict(self)
        data["failed"] = [{"path": p, "error": e} for p, e in self.failed]
        data.update(embedded=self.embedded, images_per_second=round(self.images_per_second, 2),
                    seconds=round(self.seconds, 3))
        return data


class PhotoIndex:
    """A photo index in one SQLite file; `encoder` (an `edgeclip.Encoder`) is needed to update and to search
    by text or image. `rebuild=True` empties an index made with another bundle instead of refusing it.

    `update(paths)` brings the index in line with the image files under `paths`; `search(text=..., image=...)`
    ranks the indexed files; `remove(paths)` drops files or whole folders from the index.
    """

    def __init__(self, db: PathLike, encoder: Any = None, *, rebuild: bool = False, batch_size: int = DEFAULT_BATCH):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.path = Path(db).expanduser()
        self.encoder = encoder
        self.batch_size = batch_size
        self._matrix: Optional[VectorMatrix] = None
        self._conn = self._open()
        if encoder is not None:
            self._claim(bundle_identity(encoder.bundle), str(encoder.bundle.root), rebuild)

    # ---- storage -------------------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        if self.path.is_dir():
            raise PhotoIndexError(f"{self.path} is a directory; give the index file (e.g. {self.path / 'photos.db'})")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL: a killed process loses no committed transaction
            version = self._schema_version(conn)
            if version is None:
                with _transaction(conn):
                    for statement in filter(str.strip, _SCHEMA.split(";")):
                        conn.execute(statement)
                    if conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 0:
                        conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
                        conn.execute("INSERT OR IGNORE INTO meta VALUES ('dtype', ?), ('generation', '0')",
                                     (STORE_DTYPE,))
            elif version > SCHEMA_VERSION:
                raise PhotoIndexError(f"{self.path} is an index of schema version {version}; this edgeclip reads up "
                                      f"to {SCHEMA_VERSION}: upgrade edgeclip (pip install -U edgeclip)")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise PhotoIndexError(f"{self.path} is not an edgeclip photo index ({exc})") from None
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _schema_version(conn: sqlite3.Connection) -> Optional[int]:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "schema_version" not in tables:
            if tables - {"sqlite_sequence"}:
                raise sqlite3.DatabaseError(f"it holds other tables: {', '.join(sorted(tables))}")
            return None
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def _meta(self, key: str) -> Optional[str]:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @property
    def identity(self) -> Optional[str]:
        """The bundle identity of the stored embeddings (see bundle_identity), None for a new index."""
        return self._meta("bundle_identity")

    @property
    def bundle_path(self) -> Optional[str]:
        """Where the bundle that built this index was last loaded from."""
        return self._meta("bundle_path")

    @property
    def generation(self) -> int:
        """A counter raised by every committed change (tells a loaded search matrix it is stale)."""
        return int(self._meta("generation") or 0)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._meta("dtype") or STORE_DTYPE)

    def _claim(self, identity: str, bundle_path: Optional[str], rebuild: bool) -> None:
        """Record `identity` as this index's bundle, or refuse a different one (rebuild: start over with it)."""
        current = self.identity
        if current is not None and current != identity and not rebuild:
            raise BundleMismatchError(
                f"index {self.path} holds embeddings of bundle {describe_identity(current)}, not of "
                f"{describe_identity(identity)}; embeddings of two bundles cannot be compared. "
                f"Use the same bundle, another --db, or --rebuild to re-embed everything with this one")
        if current == identity and (not bundle_path or bundle_path == self.bundle_path):
            return
        with _transaction(self._conn) as conn:
            if current != identity:
                conn.execute("DELETE FROM photos")
                conn.execute("DELETE FROM failures")
                self._bump(conn)
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('bundle_identity', ?)", (identity,))
            if bundle_path:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('bundle_path', ?)", (bundle_path,))

    @staticmethod
    def _bump(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")

    def _to_blob(self, vector: np.ndarray) -> bytes:
        return np.asarray(vector, dtype=self.dtype).tobytes()

    def _store(self, done: Sequence[tuple[str, tuple[int, int], Optional[np.ndarray], Optional[str]]]) -> None:
        """Commit one batch of results in one transaction: embeddings replace rows, errors become failures."""
        with _transaction(self._conn) as conn:
            for path, (size, mtime), vector, error in done:
                if vector is not None:
                    conn.execute("INSERT INTO photos (path, size, mtime_ns, embedding) VALUES (?, ?, ?, ?) "
                                 "ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns, "
                                 "embedding = excluded.embedding", (path, size, mtime, self._to_blob(vector)))
                    conn.execute("DELETE FROM failures WHERE path = ?", (path,))
                else:
                    conn.execute("DELETE FROM photos WHERE path = ?", (path,))
                    conn.execute("INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?)", (path, size, mtime, error))
            self._bump(conn)

    # ---- public API ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM photos").fetchone()[0])

    def paths(self) -> list[str]:
        """Every indexed path, sorted."""
        return [r[0] for r in self._conn.execute("SELECT path FROM photos ORDER BY path")]

    def failures(self) -> list[dict]:
        """The files that could not be embedded: path, size, mtime_ns and the error, sorted by path."""
        rows = self._conn.execute("SELECT path, size, mtime_ns, error FROM failures ORDER BY path")
        return [{"path": p, "size": s, "mtime_ns": m, "error": e} for p, s, m, e in rows]

    def embeddings(self) -> dict[str, np.ndarray]:
        """{path: float32 embedding} of every indexed file."""
        dt = self.dtype
        return {p: np.frombuffer(b, dtype=dt).astype(np.float32)
                for p, b in self._conn.execute("SELECT path, embedding FROM photos")}

    def _need_encoder(self, what: str) -> Any:
        if self.encoder is None:
            raise InputError(f"{what} needs an encoder: PhotoIndex(db, Encoder(bundle))")
        return self.encoder

    def update(self, paths: Sequence[PathLike], progress: Optional[Callable[[int], None]] = None,
               on_total: Optional[Callable[[int], None]] = None) -> UpdateReport:
        """Index new and changed image files under `paths`, drop deleted ones; unchanged files and unchanged
        broken files are not read. `on_total(n)` is told how many files will be embedded, `progress(k)` after
        each committed batch of k. Returns what was done."""
        encoder = self._need_encoder("updating an index")
        start = time.perf_counter()
        roots = [os.path.abspath(os.path.expanduser(str(p))) for p in paths]
        if not roots:
            raise InputError("update needs at least one folder or file")
        found = scan_images(roots)
        known = {p: (s, m) for p, s, m in self._conn.execute("SELECT path, size, mtime_ns FROM photos")}
        broken = {p: (s, m) for p, s, m in self._conn.execute("SELECT path, size, mtime_ns FROM failures")}
        report = UpdateReport(scanned=len(found))
        for path in [p for p in found if not _is_utf8(p)]:  # SQLite text is UTF-8: such a name cannot be stored
            del found[path]
            report.failed.append((path.encode("utf-8", "backslashreplace").decode(),
                                  "the file name is not valid UTF-8 and cannot be indexed; rename the file"))
        gone = sorted(p for p in known if p not in found and _under(p, roots))
        gone_broken = [p for p in broken if p not in found and _under(p, roots)]
        if gone or gone_broken:
            with _transaction(self._conn) as conn:
                conn.executemany("DELETE FROM photos WHERE path = ?", [(p,) for p in gone])
                conn.executemany("DELETE FROM failures WHERE path = ?", [(p,) for p in gone_broken])
                self._bump(conn)
            report.deleted = gone
        todo = []
        for path, stat in found.items():
            if known.get(path) == stat:
                report.unchanged += 1
            elif broken.get(path) == stat:
                report.still_broken += 1
            else:
                todo.append(path)
        if on_total:
            on_total(len(todo))
        done: list = []
        for path, vector, error in embed_stream(encoder, todo, self.batch_size):
            done.append((path, found[path], vector, error))
            if vector is None:
                report.failed.append((path, error))
            else:
                (report.changed if path in known else report.added).append(path)
            if len(done) == self.batch_size:
                self._store(done)
                if progress:
                    progress(len(done))
                done = []
        if done:
            self._store(done)
            if progress:
                progress(len(done))
        report.seconds = time.perf_counter() - start
        return report

    def remove(self, paths: Sequence[PathLike]) -> list[str]:
        """Drop these files, and every file under these folders, from the index (the files are not touched)."""
        roots = [os.path.abspath(os.path.expanduser(str(p))) for p in paths]
        rows = [r[0] for r in self._conn.execute("SELECT path FROM photos") if _under(r[0], roots)]
        with _transaction(self._conn) as conn:
            conn.executemany("DELETE FROM photos WHERE path = ?", [(p,) for p in rows])
            conn.executemany("DELETE FROM failures WHERE path = ?",
                             [(r[0],) for r in conn.execute("SELECT path FROM failures").fetchall() if _under(r[0], roots)])
            self._bump(conn)
        return sorted(rows)

    @property
    def cache_dir(self) -> Path:
        """Where the search matrix of the current generation is kept as .npy files (memory-mapped on open)."""
        return self.path.parent / f"{self.path.name}.search-cache"

    def _cache_files(self, generation: int) -> tuple[Path, Path]:
        return self.cache_dir / f"g{generation}-ids.npy", self.cache_dir / f"g{generation}-vectors.npy"

    def matrix(self) -> VectorMatrix:
        """The index's embeddings as one float32 matrix: memory-mapped from the cache of this generation, or
        read from the database once (and cached); reloaded only after the index changed."""
        generation = self.generation
        if self._matrix is None or self._matrix.generation != generation:
            self._matrix = self._cached_matrix(generation) or self._read_matrix()
        return self._matrix

    def _cached_matrix(self, generation: int) -> Optional[VectorMatrix]:
        ids_file, vectors_file = self._cache_files(generation)
        try:
            ids = np.load(ids_file)
            vectors = np.load(vectors_file, mmap_mode="r")
        except (OSError, ValueError):
            return None  # none yet, or unreadable: read the database instead
        if vectors.dtype != np.float32 or vectors.ndim != 2 or len(vectors) != len(ids):
            return None
        return VectorMatrix(ids, vectors, generation)

    def _read_matrix(self) -> VectorMatrix:
        """Read every embedding in one snapshot (generation and rows agree), then write the cache best-effort."""
        self._conn.execute("BEGIN")
        try:
            generation = self.generation
            rows = self._conn.execute("SELECT id, embedding FROM photos ORDER BY id").fetchall()
        finally:
            self._conn.execute("COMMIT")
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        dim = len(rows[0][1]) // self.dtype.itemsize if rows else 0
        vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=self.dtype).reshape(len(rows), dim)
        matrix = VectorMatrix(ids, vectors.astype(np.float32), generation)
        try:
            self.cache_dir.mkdir(exist_ok=True)
            keep = self._cache_files(generation)
            for path, array in zip(keep, (matrix.ids, matrix.vectors)):
                with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                    np.save(fh, array)
            for old in self.cache_dir.glob("g*-*.npy"):
                if old not in keep:
                    old.unlink()
        except OSError:
            pass  # a read-only folder: search still works, it just reads the database on every open
        return matrix

    def search_vector(self, query: np.ndarray, top_k: int = 10) -> list[Match]:
        """The top_k indexed files closest (cosine) to a unit query vector, best first."""
        ids, scores = self.matrix().top_k(query, top_k)
        if not len(ids):
            return []
        marks = ",".join("?" * len(ids))
        where = dict(self._conn.execute(f"SELECT id, path FROM photos WHERE id IN ({marks})", [int(i) for i in ids]))
        return [Match(where[int(i)], float(s)) for i, s in zip(ids, scores) if int(i) in where]

    def search(self, text: Optional[str] = None, image: Any = None, top_k: int = 10, weight: float = 0.5) -> list[Match]:
        """Rank the indexed files by a text, an image (path, bytes, PIL image or array), or both mixed with
        `weight` on the text (0..1); returns the top_k matches, best first."""
        encoder = self._need_encoder("searching by text or image")
        if text is not None and not isinstance(text, str):
            raise InputError(f"text must be a string, got {type(text).__name__}")
        t = encoder.encode_text(text)[0] if text is not None else None
        i = encoder.encode_image(image)[0] if image is not None else None
        return self.search_vector(combine_queries(t, i, weight), top_k)

    def import_rows(self, rows: Iterable[dict], identity: str) -> dict:
        """Merge embedding rows made elsewhere (path, embedding or error, size, mtime_ns) made by the bundle
        `identity`; an index of another bundle refuses them. Returns counts of imported and failed rows."""
        self._claim(identity, None, rebuild=False)
        counts = {"imported": 0, "failed": 0}
        batch: list = []
        for row in rows:
            vector = row.get("embedding")
            stat = (int(row.get("size") or 0), int(row.get("mtime_ns") or 0))
            if vector is not None:
                batch.append((row["path"], stat, np.asarray(vector, dtype=np.float32), None))
            else:
                batch.append((row["path"], stat, None, str(row.get("error") or "no embedding")))
            counts["imported" if vector is not None else "failed"] += 1
            if len(batch) >= 1000:
                self._store(batch)
                batch = []
        if batch:
            self._store(batch)
        return counts

    def info(self) -> dict:
        """Counts, bundle and storage facts of the index."""
        identity = self.identity
        return {"db": str(self.path), "photos": len(self), "failures": len(self.failures()),
                "bundle": json.loads(identity) if identity else None, "bundle_path": self.bundle_path,
                "dtype": self.dtype.name, "generation": self.generation, "schema_version": SCHEMA_VERSION}

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "PhotoIndex":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (all of a batch or none of it)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


__all__ = ["BundleMismatchError", "PhotoIndex", "PhotoIndexError", "UpdateReport", "bundle_identity",
           "embed_stream", "image_extensions", "scan_images"]
