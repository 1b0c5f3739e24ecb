"""automation: webhook secrets kept for HMAC signatures; alerts acknowledged / resolved by hand

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 16:20:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('triggers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('hook_secret', sa.Text(), nullable=True))
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('acked_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('acked_by', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('resolved_by', sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_column('resolved_by')
        batch_op.drop_column('acked_by')
        batch_op.drop_column('acked_at')
    with op.batch_alter_table('triggers', schema=None) as batch_op:
        batch_op.drop_column('hook_secret')
