"""trial kinds (confirm runs), the baseline as a job

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

- `trials.kind`: `search` (a point the sampler proposed, or an enqueued / warm-start configuration) or
  `confirm` (the configuration of search trial `confirm_of`, trained again with another seed once the search
  budget is spent; never shown to the sampler as a new point).
- `trials.confirm_of`: for a confirm run, the number of the search trial whose configuration it repeats.
- `trials.train_seed`: the training seed of this run (NULL: the study's `seed`).
- `studies.test_trial_number`: the trial whose checkpoint `test_value` scored; `studies.test_rescore`: a newer
  winner (an `extend` changed it) waits for its test score, `test_value` still holds the older winner's until then.
- `studies.baseline_lease_token`, `baseline_lease_expires_at`: the untrained baseline is a job with a lease,
  computed once per study by one worker (again only if that worker dies), never before a lone worker's first
  trial. `baseline_attempts` caps the takes (a baseline that cannot be computed does not loop forever);
  `baseline_recorded_at` says when it landed (trials that finished before it get `below_baseline` then).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('trials', sa.Column('kind', sa.String(length=16), server_default='search', nullable=False))
    op.add_column('trials', sa.Column('confirm_of', sa.Integer(), nullable=True))
    op.add_column('trials', sa.Column('train_seed', sa.BigInteger(), nullable=True))
    op.create_check_constraint('ck_trials_kind', 'trials', "kind IN ('search', 'confirm')")
    op.add_column('studies', sa.Column('test_trial_number', sa.Integer(), nullable=True))
    op.add_column('studies', sa.Column('test_rescore', sa.Boolean(), server_default='false', nullable=False))
    op.add_column('studies', sa.Column('baseline_lease_token', postgresql.UUID(as_uuid=True), nullable=True))
    op.add_column('studies', sa.Column('baseline_lease_expires_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('studies', sa.Column('baseline_attempts', sa.Integer(), server_default='0', nullable=False))
    op.add_column('studies', sa.Column('baseline_recorded_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column('studies', 'baseline_recorded_at')
    op.drop_column('studies', 'baseline_attempts')
    op.drop_column('studies', 'baseline_lease_expires_at')
    op.drop_column('studies', 'baseline_lease_token')
    op.drop_column('studies', 'test_rescore')
    op.drop_column('studies', 'test_trial_number')
    op.drop_constraint('ck_trials_kind', 'trials', type_='check')
    op.drop_column('trials', 'train_seed')
    op.drop_column('trials', 'confirm_of')
    op.drop_column('trials', 'kind')
