"""function_invocations.attempt and not_before: async invocations cut off by a control-plane
crash are retried (up to 3 attempts, with backoff)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 17:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('function_invocations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attempt', sa.Integer(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('not_before', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('function_invocations', schema=None) as batch_op:
        batch_op.drop_column('not_before')
        batch_op.drop_column('attempt')
