"""worker scheduler

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Which batch scheduler job a worker runs in, when it runs in one: `scheduler` ('slurm'), `scheduler_job` (the
SLURM array job id, or the job id outside an array) and `scheduler_task` (the array task id). NULL: started by
hand (or by something that does not say).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('workers', sa.Column('scheduler', sa.String(length=16), nullable=True))
    op.add_column('workers', sa.Column('scheduler_job', sa.String(length=64), nullable=True))
    op.add_column('workers', sa.Column('scheduler_task', sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column('workers', 'scheduler_task')
    op.drop_column('workers', 'scheduler_job')
    op.drop_column('workers', 'scheduler')
