"""pipeline queue: resumes of failed runs

Revision ID: 0009_pipelines_queue_resume
Revises: 0008_server_queue
"""
from alembic import op
import sqlalchemy as sa

revision = '0009_pipelines_queue_resume'
down_revision = '0008_server_queue'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('pipeline_queue', schema=None) as batch_op:
        batch_op.add_column(sa.Column('resume_of', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('pipeline_queue', schema=None) as batch_op:
        batch_op.drop_column('resume_of')
