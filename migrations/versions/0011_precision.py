"""precision: what each trial trained in, and each worker's native bf16 unit

Revision ID: 0011_precision
Revises: 0010_projects
Create Date: 2026-12-08

- `trials.precision`: `fp32`, `bf16` or `fp16`, set by the worker when the trial starts training (from the
  study's `precision` and the worker's device: workers/devices.py); NULL until then, and for trials trained
  before this revision.
- `workers.bf16`: the native bfloat16 unit the worker found at start-up: `amx`, `avx512_bf16` (CPU), `cuda` (a
  GPU with bf16) or `none`; NULL for workers that predate it.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011_precision'
down_revision = '0010_projects'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('trials', sa.Column('precision', sa.String(length=8), nullable=True))
    op.create_check_constraint('ck_trials_precision', 'trials', "precision IN ('fp32', 'bf16', 'fp16')")
    op.add_column('workers', sa.Column('bf16', sa.String(length=16), nullable=True))


def downgrade() -> None:
    op.drop_column('workers', 'bf16')
    op.drop_constraint('ck_trials_precision', 'trials', type_='check')
    op.drop_column('trials', 'precision')
