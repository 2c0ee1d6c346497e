from pathlib import Path

import pytest
import sqlalchemy as sa

from keel.errors import StoreError
from keel.store.metadata import MetadataStore


def test_new_database_is_created_on_first_use(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'k.db'}")
    with store.read():
        pass
    assert store.revisions() == store.head_revisions()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    store.dispose()


def test_unmigrated_postgres_database_names_the_fix(pg_uri: str) -> None:
    store = MetadataStore(pg_uri)
    store.upgrade("0001_tracking")
    if store.head_revisions() == {"0001_tracking"}:
        pytest.skip("no later migration to be behind")
    store2 = MetadataStore(pg_uri)
    with pytest.raises(StoreError, match="keel db upgrade"), store2.read():
        pass
    store2.upgrade()
    with store2.read() as conn:
        assert conn.execute(sa.text("select 1")).scalar() == 1
    store.dispose()
    store2.dispose()


def test_unreachable_database_is_a_store_error() -> None:
    store = MetadataStore("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(StoreError, match="Check that the database is running"), store.read():
        pass


def test_bad_url_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="not a database URL"):
        MetadataStore("not a url")
    with pytest.raises(StoreError, match="Unsupported"):
        MetadataStore("mysql://x@y/z")


def test_upgrade_is_idempotent_and_concurrent_safe(pg_uri: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    stores = [MetadataStore(pg_uri) for _ in range(3)]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda s: s.upgrade(), stores))
    assert stores[0].revisions() == stores[0].head_revisions()
    for s in stores:
        s.dispose()


def test_created_schema_matches_the_migrations(tmp_path: Path) -> None:
    """create_all + stamp (new databases) and replaying the migrations give the same tables."""
    created = MetadataStore(f"sqlite:///{tmp_path / 'created.db'}")
    created.upgrade()
    migrated = MetadataStore(f"sqlite:///{tmp_path / 'migrated.db'}")
    migrated.upgrade("0001_tracking")
    migrated.upgrade()
    assert created.revisions() == migrated.revisions() == created.head_revisions()

    def shape(store: MetadataStore) -> dict[str, list[tuple[str, str, bool]]]:
        insp = sa.inspect(store.engine)
        return {
            t: sorted((c["name"], str(c["type"]), bool(c["nullable"])) for c in insp.get_columns(t))
            for t in insp.get_table_names()
        }

    assert shape(created) == shape(migrated)
    created.dispose()
    migrated.dispose()


def test_store_errors_never_show_the_password() -> None:
    store = MetadataStore("postgresql+psycopg://bob:hunter2@127.0.0.1:1/none?connect_timeout=2&sslpassword=s3cret")
    with pytest.raises(StoreError) as info, store.read():
        pass
    text = str(info.value) + repr(info.value.to_dict())
    assert "hunter2" not in text and "s3cret" not in text
    assert "bob:***@127.0.0.1:1/none" in text


def test_online_store_errors_never_show_the_password() -> None:
    pytest.importorskip("redis")
    from keel.store.kv import open_kv_store

    kv = open_kv_store("redis://:hunter2@127.0.0.1:1/0?socket_connect_timeout=1")
    with pytest.raises(StoreError) as info:
        kv.get_many([("ns", ["a"])])
    assert "hunter2" not in str(info.value) and ":***@127.0.0.1:1" in str(info.value)


def test_a_pooled_connection_the_server_dropped_is_replaced(pg_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.store import metadata

    monkeypatch.setattr(metadata, "PING_AFTER_IDLE_S", 0.0)
    store = MetadataStore(pg_uri)
    with store.read() as conn:
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    admin = sa.create_engine(pg_uri, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    admin.dispose()
    with store.read() as conn:  # the idle connection is pinged, found dead and replaced
        assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar() != pid
    store.dispose()


def test_script_heads_are_alembics_heads(tmp_path: Path) -> None:
    """The cheap head check reads the same heads Alembic's script loader finds, and steps aside when it cannot."""
    import shutil

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from keel.store.metadata import MIGRATIONS, script_heads

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert script_heads() == set(ScriptDirectory.from_config(cfg).get_heads())
    versions = tmp_path / "versions"
    shutil.copytree(MIGRATIONS / "versions", versions, ignore=shutil.ignore_patterns("__pycache__"))
    (versions / "0099_merge.py").write_text("revision = '0099_merge'\ndown_revision = ('0008_auth', '0009_retraining')\n")
    heads = script_heads(versions)
    assert heads is not None and "0099_merge" in heads and not heads & {"0008_auth", "0009_retraining"}
    (versions / "0100_odd.py").write_text("revision = make_name()\ndown_revision = None\n")
    assert script_heads(versions) is None  # not literals: MetadataStore.head_revisions asks Alembic
