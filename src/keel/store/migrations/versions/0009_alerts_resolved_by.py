"""alerts: who resolved them

Revision ID: 0009_alerts_resolved_by
Revises: 0006_monitoring
"""
from alembic import op
import sqlalchemy as sa

revision = '0009_alerts_resolved_by'
down_revision = '0006_monitoring'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('monitoring_alerts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('resolved_by', sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('monitoring_alerts', schema=None) as batch_op:
        batch_op.drop_column('resolved_by')
