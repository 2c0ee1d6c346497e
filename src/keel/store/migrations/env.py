from alembic import context

from keel.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - keel always passes a connection
    raise RuntimeError("keel runs its migrations through MetadataStore.upgrade()")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
