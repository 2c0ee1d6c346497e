"""services: the model servers keel deploy start asks for and keel worker runs

Revision ID: 0010_services
Revises: 0008_deployments
"""
from alembic import op
import sqlalchemy as sa

revision = '0010_services'
down_revision = '0008_deployments'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('services',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('replicas', sa.Integer(), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('ports', sa.Text(), nullable=False),
    sa.Column('desired', sa.String(length=16), nullable=False),
    sa.Column('owner', sa.String(length=255), nullable=True),
    sa.Column('lease_expires_ms', sa.BigInteger(), nullable=True),
    sa.Column('replica_state', sa.Text(), nullable=True),
    sa.Column('requested_by', sa.String(length=255), nullable=False),
    sa.Column('requested_ms', sa.BigInteger(), nullable=False),
    sa.Column('updated_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_services')),
    sa.UniqueConstraint('name', name=op.f('uq_services_name'))
    )


def downgrade() -> None:
    op.drop_table('services')
