"""serving_nodes: data-plane processes (embedded, standalone `loopml serve` nodes, replicas) and
their heartbeats, endpoints loaded and load, by the database clock

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 17:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('serving_nodes',
    sa.Column('id', sa.String(length=200), nullable=False),
    sa.Column('address', sa.String(length=500), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('endpoint', sa.String(length=128), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('started_at', sa.Float(), nullable=False),
    sa.Column('heartbeat_at', sa.Float(), nullable=False),
    sa.Column('endpoints_loaded', sa.JSON(), nullable=False),
    sa.Column('load', sa.JSON(), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_serving_nodes_heartbeat_at'), 'serving_nodes', ['heartbeat_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_serving_nodes_heartbeat_at'), table_name='serving_nodes')
    op.drop_table('serving_nodes')
