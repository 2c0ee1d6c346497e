"""registry: archived and deleted (tombstoned) models and versions

Revision ID: 0006_registry_lifecycle
Revises: 0004_registry
"""
from alembic import op
import sqlalchemy as sa

revision = '0006_registry_lifecycle'
down_revision = '0004_registry'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ('registered_models', 'model_versions'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('archived_ms', sa.BigInteger(), nullable=True))
            batch_op.add_column(sa.Column('deleted_ms', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    for table in ('model_versions', 'registered_models'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('deleted_ms')
            batch_op.drop_column('archived_ms')
