"""The metadata store: SQLAlchemy 2 Core over SQLite (default) or PostgreSQL.

SQLite runs in WAL mode with a busy timeout, and write transactions start with
``BEGIN IMMEDIATE`` so that many processes can log into one file without
"database is locked" failures. The schema is managed by Alembic: a database
with no keel tables is created on first use; one at an older revision must be
upgraded with ``keel db upgrade``.

Concurrent writers: get-or-create and last-writer-wins rows are written with
``INSERT … ON CONFLICT`` (:func:`insert_ignore`, :func:`upsert`), never as a
select followed by an insert, which two PostgreSQL transactions can both pass.
Any integrity violation or deadlock that still reaches :meth:`MetadataStore.write`
leaves the transaction rolled back as a whole and becomes a
:class:`~keel.errors.WriteConflict`; :meth:`MetadataStore.transact` retries it.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from keel.errors import StoreError, ValidationError, WriteConflict

MIGRATIONS = Path(__file__).with_name("migrations")
T = TypeVar("T")
# PostgreSQL's serialization_failure and deadlock_detected: the transaction was rolled back, retry it.
_RETRYABLE_SQLSTATES = {"40001", "40P01"}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ms_to_datetime(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def _redact(uri: str) -> str:
    from keel.config import redact

    return redact(uri)


def like_escape(s: str) -> str:
    """``s`` with LIKE's wildcards (``%``, ``_``) and the escape character escaped.

    Use with ``escape="\\"``: ``col.like(like_escape(prefix) + "/%", escape="\\")``
    matches names that start with ``prefix/`` literally, so ``model_a`` never
    matches ``model-a``.
    """
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _dialect_insert(conn: Connection, table: sa.Table) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def _bad_value(exc: Exception) -> ValidationError:
    """A value the database cannot hold (a NUL character in text, a number out of range): bad input, not a failure."""
    return ValidationError(
        f"The metadata store cannot hold a value of this request: {_first_line(exc)}.",
        hint="Text may not contain NUL characters; numbers must fit in 64 bits.",
    )


def insert_ignore(conn: Connection, table: sa.Table, values: Mapping[str, Any], conflict: Sequence[str]) -> bool:
    """``INSERT … ON CONFLICT (conflict) DO NOTHING``; True when this call inserted the row.

    The get-or-create primitive: of many concurrent callers exactly one inserts
    and none fails; read the row back in the same transaction afterwards.
    """
    stmt = _dialect_insert(conn, table).values(**values).on_conflict_do_nothing(index_elements=list(conflict))
    # RETURNING says whether a row was inserted (psycopg's rowcount does not, with implicit RETURNING)
    return conn.execute(stmt.returning(sa.literal_column("1"))).first() is not None


def upsert(
    conn: Connection, table: sa.Table, values: Mapping[str, Any], conflict: Sequence[str], update: Sequence[str] | None = None
) -> None:
    """``INSERT … ON CONFLICT (conflict) DO UPDATE``: the row ends up with ``values`` (last writer wins).

    ``update`` names the columns to overwrite on conflict (default: every
    column of ``values`` outside the conflict key).
    """
    stmt = _dialect_insert(conn, table).values(**values)
    cols = list(update) if update is not None else [c for c in values if c not in conflict]
    if not cols:
        conn.execute(stmt.on_conflict_do_nothing(index_elements=list(conflict)))
        return
    conn.execute(stmt.on_conflict_do_update(index_elements=list(conflict), set_={c: stmt.excluded[c] for c in cols}))


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return " ".join(str(orig).split("\n")[:2]).strip()


class MetadataStore:
    """One metadata database. Use :func:`get_metadata_store` to share one per URI."""

    def __init__(self, uri: str, *, auto_create: bool = True) -> None:
        self.uri = uri
        try:
            url = sa.engine.make_url(uri)
        except Exception:
            raise StoreError(
                f"KEEL_METADATA_URI {uri!r} is not a database URL.",
                hint="Use sqlite:///path/keel.db or postgresql+psycopg://user@host:5432/db.",
            ) from None
        self.dialect = url.get_backend_name()
        if self.dialect == "postgresql" and url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        self.engine = self._make_engine(url)
        self._checked = False
        self._lock = threading.Lock()
        self.auto_create = auto_create

    def _make_engine(self, url: sa.engine.URL) -> Engine:
        if self.dialect == "sqlite":
            db = url.database
            if db and db != ":memory:":
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

            @sa.event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn: Any, _record: Any) -> None:
                # Let SQLAlchemy, not the driver, decide when transactions begin.
                dbapi_conn.isolation_level = None
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA busy_timeout=60000")
                cur.close()

            @sa.event.listens_for(engine, "begin")
            def _on_begin(conn: Connection) -> None:
                write = conn.get_execution_options().get("keel_write", False)
                conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

            return engine
        if self.dialect == "postgresql":
            try:
                import psycopg  # noqa: F401
            except ImportError:
                from keel.errors import missing_extra

                raise missing_extra("psycopg", "postgres") from None
            # Metadata queries are small: parallel workers cost more to start (~10 ms on a
            # small machine) than the work they share, so keel's sessions run them serially.
            engine = sa.create_engine(
                url, pool_size=5, max_overflow=10, connect_args={"options": "-c max_parallel_workers_per_gather=0"},
            )
            _ping_when_idle(engine)
            return engine
        raise StoreError(
            f"Unsupported metadata database '{self.dialect}' in {_redact(self.uri)!r}.",
            hint="keel supports sqlite:/// and postgresql+psycopg:// URLs.",
        )

    # -- transactions ---------------------------------------------------
    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite), committed on exit.

        It is all or nothing: on any error it is rolled back. A unique-key
        violation or a deadlock becomes a :class:`~keel.errors.WriteConflict`
        (no raw driver error leaves the store).
        """
        self.ensure_schema()
        try:
            with self.engine.connect().execution_options(keel_write=True) as conn, conn.begin():
                yield conn
        except sa.exc.IntegrityError as exc:
            raise WriteConflict(
                f"A write to the metadata store collided with a row another writer stored first: {_first_line(exc)}. Nothing of it was written.",
                hint="Retry the operation; if it keeps failing, the record already exists under that name.",
            ) from exc
        except sa.exc.DataError as exc:
            raise _bad_value(exc) from exc
        except sa.exc.OperationalError as exc:
            if _sqlstate(exc) in _RETRYABLE_SQLSTATES:
                raise WriteConflict(
                    f"The metadata store rolled this write back to resolve a conflict with a concurrent one: {_first_line(exc)}.",
                    hint="Retry the operation.",
                ) from exc
            raise self._unreachable(exc) from exc

    def transact(self, fn: Callable[[Connection], T], *, attempts: int = 8) -> T:
        """Run ``fn(conn)`` in one write transaction, retried on :class:`~keel.errors.WriteConflict`.

        Each attempt is a fresh transaction, so a lost race leaves nothing
        behind; ``fn`` must do all its writing through ``conn``. The last
        conflict is raised when every attempt lost.
        """
        for attempt in range(attempts):
            try:
                with self.write() as conn:
                    return fn(conn)
            except WriteConflict:
                if attempt == attempts - 1:
                    raise
                time.sleep(random.uniform(0, 0.005 * 2**attempt))
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction."""
        self.ensure_schema()
        try:
            with self.engine.connect() as conn, conn.begin():
                yield conn
        except sa.exc.DataError as exc:
            raise _bad_value(exc) from exc
        except sa.exc.OperationalError as exc:
            raise self._unreachable(exc) from exc

    @contextlib.contextmanager
    def reads(self) -> Iterator[Connection]:
        """Reads that need no common snapshot: on PostgreSQL with no BEGIN and COMMIT around them.

        At PostgreSQL's READ COMMITTED every statement takes its own snapshot, in a
        transaction or not, so the two round trips buy nothing; on SQLite this is
        :meth:`read`.
        """
        if self.dialect != "postgresql":
            with self.read() as conn:
                yield conn
            return
        self.ensure_schema()
        try:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                yield conn
        except sa.exc.DataError as exc:
            raise _bad_value(exc) from exc
        except sa.exc.OperationalError as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: Exception) -> StoreError:
        return StoreError(
            f"The metadata store {_redact(self.uri)} failed: {str(exc).splitlines()[0]}",
            hint="Check that the database is running and KEEL_METADATA_URI is right.",
        )

    # -- schema -----------------------------------------------------------
    def ensure_schema(self) -> None:
        if self._checked:
            return
        with self._lock:
            if self._checked:
                return
            current, heads = self.revisions(), self.head_revisions()
            if current != heads:
                # A new database, or an embedded SQLite file, is migrated on first use;
                # a shared PostgreSQL database is migrated on purpose with `keel db upgrade`.
                if self.auto_create and (not current or self.dialect == "sqlite"):
                    self.upgrade()
                else:
                    raise StoreError(
                        f"The metadata store {_redact(self.uri)} is at schema revision "
                        f"{', '.join(sorted(current)) or 'none'}, this keel needs {', '.join(sorted(heads))}.",
                        hint="Run `keel db upgrade` to migrate it.",
                    )
            self._checked = True

    def revisions(self) -> set[str]:
        """The applied revisions (one per subsystem branch); empty for a new database."""
        try:
            with self.engine.connect() as conn:
                if not sa.inspect(conn).has_table("alembic_version"):
                    return set()
                return set(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())
        except sa.exc.OperationalError as exc:
            raise self._unreachable(exc) from exc

    def _alembic_config(self) -> Any:
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.set_main_option("sqlalchemy.url", self.uri.replace("%", "%%"))
        return cfg

    def head_revisions(self) -> set[str]:
        """Each subsystem's migrations form a branch off 0001_tracking; these are their heads.

        Read from the migration files' ``revision`` / ``down_revision`` literals (Alembic's
        script loader costs a third of a second per process); a file that does not state
        them as plain literals falls back to Alembic itself.
        """
        heads = script_heads()
        if heads is not None:
            return heads
        from alembic.script import ScriptDirectory

        return set(ScriptDirectory.from_config(self._alembic_config()).get_heads())

    def upgrade(self, revision: str = "heads") -> None:
        """Migrate the schema (``keel db upgrade``); safe to call from many processes."""
        from alembic import command

        cfg = self._alembic_config()
        with self._migration_lock() as conn:
            cfg.attributes["connection"] = conn
            if revision == "heads" and not _applied(conn):
                # A new database: create the current schema at once and record it as
                # migrated, instead of replaying every migration (Alembic's recipe).
                from keel.store.schema import metadata

                metadata.create_all(conn)
                command.stamp(cfg, "heads")
            else:
                command.upgrade(cfg, revision)
        self._checked = False

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[Connection]:
        if self.dialect == "postgresql":
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT pg_advisory_lock(72217)"))
                conn.commit()
                try:
                    yield conn
                    conn.commit()
                finally:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(72217)"))
                    conn.commit()
        else:
            with self.engine.connect().execution_options(keel_write=True) as conn:
                yield conn
                conn.commit()

    # -- bulk writes ------------------------------------------------------
    def insert_many(self, conn: Connection, table: sa.Table, rows: Sequence[Sequence[Any]], columns: Sequence[str] | None = None) -> None:
        """Insert rows (tuples in the order of ``columns``, default all) with the driver's fastest path."""
        if not rows:
            return
        cols = list(columns) if columns is not None else [c.name for c in table.columns]
        if self.dialect == "postgresql":
            raw = conn.connection.driver_connection
            quoted = ", ".join(f'"{c}"' for c in cols)
            with raw.cursor() as cur, cur.copy(f'COPY "{table.name}" ({quoted}) FROM STDIN') as copy:  # type: ignore[union-attr]
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" for _ in cols)
            quoted = ", ".join(f'"{c}"' for c in cols)
            cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                cur.executemany(f'INSERT INTO "{table.name}" ({quoted}) VALUES ({marks})', rows)
            finally:
                cur.close()

    def dispose(self) -> None:
        self.engine.dispose()


PING_AFTER_IDLE_S = 10.0


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before use only when it sat idle for a while.

    ``pool_pre_ping`` costs a round trip on every checkout (two per registry call);
    a connection used a moment ago is alive, so only one idle for PING_AFTER_IDLE_S
    (which a restarted server or a dropped network may have closed) is pinged, and
    a dead one is replaced before the caller sees it.
    """

    @sa.event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["keel_idle_since"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("keel_idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
            return
        try:
            cur = dbapi_conn.cursor()
            try:
                cur.execute("SELECT 1")
            finally:
                cur.close()
            dbapi_conn.rollback()
        except Exception:
            raise sa.exc.DisconnectionError() from None  # the pool retries with a new connection


_HEADS: dict[tuple[tuple[str, int, int], ...], set[str] | None] = {}


def script_heads(folder: Path | None = None) -> set[str] | None:
    """The head revisions of the migration scripts in ``folder``, without importing them (None: not plain literals)."""
    import ast
    import re

    folder = folder or MIGRATIONS / "versions"
    scripts = sorted(folder.glob("*.py"))
    key = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in scripts)
    if key in _HEADS:
        return _HEADS[key]
    assign = re.compile(r"^(revision|down_revision)\s*(?::[^=]*)?=\s*(.+?)\s*$", re.M)
    revisions: set[str] = set()
    parents: set[str] = set()
    result: set[str] | None = None
    try:
        for script in scripts:
            found: dict[str, Any] = {}
            for name, value in assign.findall(script.read_text()):
                if name in found:
                    raise ValueError(script.name)  # assigned twice: let Alembic decide
                found[name] = ast.literal_eval(value)
            revision, down = found.get("revision"), found.get("down_revision")
            if not isinstance(revision, str) or "down_revision" not in found:
                raise ValueError(script.name)
            revisions.add(revision)
            for parent in (down,) if isinstance(down, str) or down is None else down:
                if parent is not None:
                    if not isinstance(parent, str):
                        raise ValueError(script.name)
                    parents.add(parent)
        result = revisions - parents
    except (ValueError, SyntaxError, TypeError):
        result = None
    _HEADS[key] = result
    return result


def _applied(conn: Connection) -> bool:
    """Whether any keel migration has been applied on this connection's database."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return False
    return conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() != 0


_stores: dict[str, MetadataStore] = {}
_stores_lock = threading.Lock()


def get_metadata_store(uri: str | None = None) -> MetadataStore:
    """The shared store for ``uri`` (default: the project's KEEL_METADATA_URI)."""
    if uri is None:
        from keel.config import settings
        from keel.store.remote import not_available

        current = settings()  # once: a server calls this several times per request
        if current.tracking_uri:  # never a quiet local database when a server is configured
            raise not_available("Opening the metadata store")
        uri = str(current.metadata_uri)
    with _stores_lock:
        store = _stores.get(uri)
        if store is None:
            store = _stores[uri] = MetadataStore(uri)
        return store


def reset_stores() -> None:
    """Dispose every shared store (tests, after fork)."""
    with _stores_lock:
        for store in _stores.values():
            store.dispose()
        _stores.clear()
