"""The metadata store: SQLAlchemy 2 Core over SQLite (default) or PostgreSQL.

SQLite runs in WAL mode with a busy timeout, and write transactions start with
``BEGIN IMMEDIATE`` so that many processes can log into one file without
"database is locked" failures. The schema is managed by Alembic: a database
with no keel tables is created on first use; one at an older revision must be
upgraded with ``keel db upgrade``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from keel.errors import StoreError

MIGRATIONS = Path(__file__).with_name("migrations")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ms_to_datetime(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def _redact(uri: str) -> str:
    try:
        return sa.engine.make_url(uri).render_as_string(hide_password=True)
    except Exception:
        return uri


def like_escape(s: str) -> str:
    """``s`` as a literal inside a LIKE pattern: ``%``, ``_`` and ``\\`` escaped with ``\\``.

    Use it as ``column.like(like_escape(prefix) + "%", escape="\\")``.
    """
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


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
            return sa.create_engine(
                url, pool_pre_ping=True, pool_size=5, max_overflow=10,
                connect_args={"options": "-c max_parallel_workers_per_gather=0"},
            )
        raise StoreError(
            f"Unsupported metadata database '{self.dialect}' in {_redact(self.uri)!r}.",
            hint="keel supports sqlite:/// and postgresql+psycopg:// URLs.",
        )

    # -- transactions ---------------------------------------------------
    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite), committed on exit."""
        self.ensure_schema()
        try:
            with self.engine.connect().execution_options(keel_write=True) as conn, conn.begin():
                yield conn
        except sa.exc.OperationalError as exc:
            raise self._unreachable(exc) from exc

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction."""
        self.ensure_schema()
        try:
            with self.engine.connect() as conn, conn.begin():
                yield conn
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
        """Each subsystem's migrations form a branch off 0001_tracking; these are their heads."""
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

        uri = str(settings().metadata_uri)
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
