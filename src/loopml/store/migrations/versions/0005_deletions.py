"""deletions: artifact_deletions (the outbox of deleted records' artifacts) and retired version numbers

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 16:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('artifact_deletions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('prefix', sa.Text(), nullable=False),
    sa.Column('what', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    for table in ('datasets', 'models'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('retired_version', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    for table in ('models', 'datasets'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('retired_version')
    op.drop_table('artifact_deletions')
