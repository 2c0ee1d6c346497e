"""retraining policies

Revision ID: 0009_retraining
Revises: 0001_tracking
"""
from alembic import op
import sqlalchemy as sa

revision = '0009_retraining'
down_revision = '0001_tracking'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('retraining_policies',
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('model', sa.String(length=255), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('spec', sa.Text(), nullable=False),
    sa.Column('origin', sa.String(length=16), nullable=False),
    sa.Column('paused', sa.Boolean(), nullable=False),
    sa.Column('state', sa.Text(), nullable=False),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('lease_expires_ms', sa.BigInteger(), nullable=True),
    sa.Column('created_by', sa.String(length=255), nullable=False),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.Column('updated_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_retraining_policies'))
    )
    op.create_table('retraining_policy_versions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('policy', sa.String(length=255), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('spec', sa.Text(), nullable=False),
    sa.Column('declared_by', sa.String(length=255), nullable=False),
    sa.Column('declared_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_retraining_policy_versions')),
    sa.UniqueConstraint('policy', 'version', name='uq_retraining_policy_versions')
    )
    op.create_table('retraining_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('policy', sa.String(length=255), nullable=False),
    sa.Column('retrain', sa.String(length=32), nullable=True),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('user', sa.String(length=255), nullable=False),
    sa.Column('trigger', sa.Text(), nullable=True),
    sa.Column('run_id', sa.String(length=32), nullable=True),
    sa.Column('model_version', sa.Integer(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('ts_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_retraining_events'))
    )
    with op.batch_alter_table('retraining_events', schema=None) as batch_op:
        batch_op.create_index('ix_retraining_events_policy', ['policy', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('retraining_events', schema=None) as batch_op:
        batch_op.drop_index('ix_retraining_events_policy')
    op.drop_table('retraining_events')
    op.drop_table('retraining_policy_versions')
    op.drop_table('retraining_policies')
