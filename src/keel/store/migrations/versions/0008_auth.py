"""auth: users, API tokens, per-object roles, owners (replacing registered_models.owner), refusals

Revision ID: 0008_auth
Revises: 0006_registry_lifecycle

On the registry's branch, because it moves registered_models.owner into owners
(an Alembic depends_on would leave 0006_registry_lifecycle a head that the
version table no longer records).
"""
from alembic import op
import sqlalchemy as sa

revision = '0008_auth'
down_revision = '0006_registry_lifecycle'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('users',
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=True),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.Column('created_by', sa.String(length=255), nullable=False),
    sa.Column('disabled_ms', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_users'))
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('user', sa.String(length=255), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.Column('expires_ms', sa.BigInteger(), nullable=True),
    sa.Column('revoked_ms', sa.BigInteger(), nullable=True),
    sa.Column('last_used_ms', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens'))
    )
    op.create_index(op.f('ix_api_tokens_user'), 'api_tokens', ['user'], unique=False)
    op.create_table('object_roles',
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('user', sa.String(length=255), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('granted_ms', sa.BigInteger(), nullable=False),
    sa.Column('granted_by', sa.String(length=255), nullable=False),
    sa.PrimaryKeyConstraint('kind', 'name', 'user', name=op.f('pk_object_roles'))
    )
    op.create_index('ix_object_roles_user', 'object_roles', ['user'], unique=False)
    owners = op.create_table('owners',
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('user', sa.String(length=255), nullable=False),
    sa.Column('added_ms', sa.BigInteger(), nullable=False),
    sa.Column('added_by', sa.String(length=255), nullable=False),
    sa.PrimaryKeyConstraint('kind', 'name', 'user', name=op.f('pk_owners'))
    )
    op.create_table('auth_refusals',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('ts_ms', sa.BigInteger(), nullable=False),
    sa.Column('user', sa.String(length=255), nullable=True),
    sa.Column('status', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=True),
    sa.Column('method', sa.String(length=8), nullable=False),
    sa.Column('route', sa.String(length=1024), nullable=False),
    sa.Column('client', sa.String(length=64), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_auth_refusals'))
    )
    op.create_index(op.f('ix_auth_refusals_ts_ms'), 'auth_refusals', ['ts_ms'], unique=False)

    # Each registered model's single owner becomes its one owner.
    models = sa.table('registered_models', sa.column('name', sa.String), sa.column('owner', sa.String), sa.column('created_ms', sa.BigInteger))
    conn = op.get_bind()
    rows = conn.execute(sa.select(models.c.name, models.c.owner, models.c.created_ms)).all()
    if rows:
        op.bulk_insert(owners, [
            {'kind': 'model', 'name': r.name, 'user': r.owner, 'added_ms': r.created_ms, 'added_by': 'migration 0008_auth'}
            for r in rows if r.owner
        ])
    with op.batch_alter_table('registered_models', schema=None) as batch_op:
        batch_op.drop_column('owner')


def downgrade() -> None:
    with op.batch_alter_table('registered_models', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner', sa.String(length=255), nullable=False, server_default=''))
    conn = op.get_bind()
    conn.execute(sa.text(
        "UPDATE registered_models SET owner = COALESCE((SELECT min(o.user) FROM owners o "
        "WHERE o.kind = 'model' AND o.name = registered_models.name), '')"
    ))
    op.drop_index(op.f('ix_auth_refusals_ts_ms'), table_name='auth_refusals')
    op.drop_table('auth_refusals')
    op.drop_table('owners')
    op.drop_index('ix_object_roles_user', table_name='object_roles')
    op.drop_table('object_roles')
    op.drop_index(op.f('ix_api_tokens_user'), table_name='api_tokens')
    op.drop_table('api_tokens')
    op.drop_table('users')
