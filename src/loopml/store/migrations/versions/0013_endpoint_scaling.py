"""endpoint_scaling + scaling_decisions: endpoint autoscaling policy, the leader's state, decisions

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 17:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('endpoint_scaling',
    sa.Column('endpoint', sa.String(length=63), nullable=False),
    sa.Column('min_replicas', sa.Integer(), nullable=False),
    sa.Column('max_replicas', sa.Integer(), nullable=False),
    sa.Column('metric', sa.String(length=16), nullable=False),
    sa.Column('target', sa.Float(), nullable=False),
    sa.Column('scale_out_cooldown_s', sa.Float(), nullable=False),
    sa.Column('scale_in_cooldown_s', sa.Float(), nullable=False),
    sa.Column('desired', sa.Integer(), nullable=False),
    sa.Column('last_scale_out_at', sa.Float(), nullable=True),
    sa.Column('last_scale_in_at', sa.Float(), nullable=True),
    sa.Column('below_since', sa.Float(), nullable=True),
    sa.Column('last_evaluated_at', sa.Float(), nullable=True),
    sa.Column('last_reason', sa.Text(), nullable=True),
    sa.Column('last_value', sa.Float(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['endpoint'], ['endpoints.name'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('endpoint')
    )
    op.create_table('scaling_decisions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('endpoint', sa.String(length=63), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('from_replicas', sa.Integer(), nullable=False),
    sa.Column('to_replicas', sa.Integer(), nullable=False),
    sa.Column('metric', sa.String(length=16), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('target', sa.Float(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['endpoint'], ['endpoints.name'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_scaling_decisions_endpoint'), 'scaling_decisions', ['endpoint'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_scaling_decisions_endpoint'), table_name='scaling_decisions')
    op.drop_table('scaling_decisions')
    op.drop_table('endpoint_scaling')
