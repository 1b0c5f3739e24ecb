"""tuning_jobs and tuning_trials: hyperparameter searches whose trials are training jobs

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 14:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('tuning_jobs',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('stop_requested', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )
    with op.batch_alter_table('tuning_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tuning_jobs_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_tuning_jobs_created_at'), ['created_at'], unique=False)

    op.create_table('tuning_trials',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tuning_name', sa.String(length=32), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.String(length=32), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('intermediate', sa.JSON(), nullable=False),
    sa.Column('system_attrs', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['tuning_name'], ['tuning_jobs.name'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tuning_name', 'number', name='uq_tuning_trial_number')
    )
    with op.batch_alter_table('tuning_trials', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tuning_trials_tuning_name'), ['tuning_name'], unique=False)


def downgrade() -> None:
    op.drop_table('tuning_trials')
    op.drop_table('tuning_jobs')
