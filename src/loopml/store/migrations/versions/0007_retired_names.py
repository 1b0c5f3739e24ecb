"""retired_names: the highest version number of a model or dataset name deleted whole, so a
re-created name continues its numbering

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 17:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('retired_names',
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('last_version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('kind', 'name')
    )


def downgrade() -> None:
    op.drop_table('retired_names')
