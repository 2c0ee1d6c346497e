"""Write a new Alembic migration for the tables in keel/store/schema.

    python tools/new_migration.py "feature definitions" 0002_features [DOWN_REVISION]

Each subsystem keeps its own branch of migrations, starting off 0001_tracking
(the default DOWN_REVISION); its later migrations go on its own branch.

It upgrades a scratch SQLite database to the current head, then lets Alembic
autogenerate the difference with the schema modules. Review the file it writes.
"""

import sys
import tempfile
from pathlib import Path

from alembic import command

from keel.store.metadata import MetadataStore

message, rev_id = sys.argv[1], sys.argv[2]
down = sys.argv[3] if len(sys.argv) > 3 else "0001_tracking"
with tempfile.TemporaryDirectory() as tmp:
    store = MetadataStore(f"sqlite:///{Path(tmp) / 'scratch.db'}", auto_create=False)
    cfg = store._alembic_config()
    with store.engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "heads")
        command.revision(cfg, message=message, autogenerate=True, rev_id=rev_id, head=down, splice=True)
        conn.commit()
    store.dispose()
