"""claim permits, stored search indexes: a claim costs O(1) whatever the study's size

Revision ID: 0007_claims
Revises: 0006
Create Date: 2026-12-07

- `claim_permits`: a study's concurrency cap as rows, `(study_id, slot)` for slot 0..max_concurrent_trials-1;
  `trial_id` names the running trial that holds the permit (NULL: free). A claim takes a free permit and a queued
  trial, each `FOR UPDATE SKIP LOCKED`, in one statement (service/store/queue.py): claims of one study never
  wait on, or skip, a study row, and the cap needs no count of running trials. Only slots below the study's
  `max_concurrent_trials` are ever taken.
- Triggers keep the permits true whatever changes a trial: a trial leaving `running` (finished, given back,
  reaped, quarantined, timed out) or deleted while running frees its permit in the same transaction; a new
  study gets its permits, and raising `max_concurrent_trials` adds the missing ones (at most 10,000, the
  bound of budget.max_concurrent_trials).
- `trials.search_index`: a search slot's index among its study's search slots (enqueue_trials[i]), stored when
  the slot is created instead of counted on every claim; NULL for confirm runs.
- `ix_trials_running_worker`: a worker's running trial (the claim's look for a trial it already holds) without
  scanning every running trial.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007_claims'
down_revision = '0006'
branch_labels = None
depends_on = None

MAX_PERMITS = 10_000  # numeric_limits: budget.max_concurrent_trials is at most 10,000


def upgrade() -> None:
    op.add_column('trials', sa.Column('search_index', sa.Integer(), nullable=True))
    op.execute("""
        UPDATE trials t SET search_index = n.i
        FROM (SELECT id, row_number() OVER (PARTITION BY study_id ORDER BY number) - 1 AS i
              FROM trials WHERE kind = 'search') n
        WHERE t.id = n.id""")
    op.create_index('ix_trials_running_worker', 'trials', ['worker_id'], unique=False,
                    postgresql_where=sa.text("state = 'running'"))
    op.create_table(
        'claim_permits',
        sa.Column('study_id', sa.String(length=40), nullable=False),
        sa.Column('slot', sa.Integer(), nullable=False),
        sa.Column('trial_id', sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('study_id', 'slot'),
    )
    op.create_index('ix_claim_permits_free', 'claim_permits', ['study_id', 'slot'], unique=False,
                    postgresql_where=sa.text('trial_id IS NULL'))
    op.create_index('ix_claim_permits_trial', 'claim_permits', ['trial_id'], unique=True,
                    postgresql_where=sa.text('trial_id IS NOT NULL'))
    # Existing studies: their permits (more where more trials run than the cap, which a row edited by hand
    # may show; slots at or past the cap are never taken again), the running trials holding the first ones.
    op.execute(f"""
        INSERT INTO claim_permits (study_id, slot)
        SELECT s.id, g FROM studies s
        CROSS JOIN LATERAL generate_series(0, greatest(least(s.max_concurrent_trials, {MAX_PERMITS}),
            (SELECT count(*) FROM trials r WHERE r.study_id = s.id AND r.state = 'running')) - 1) AS g""")
    op.execute("""
        UPDATE claim_permits p SET trial_id = r.id
        FROM (SELECT id, study_id, row_number() OVER (PARTITION BY study_id ORDER BY id) - 1 AS slot
              FROM trials WHERE state = 'running') r
        WHERE p.study_id = r.study_id AND p.slot = r.slot""")
    op.execute(f"""
        CREATE FUNCTION stsweep_add_permits() RETURNS trigger AS $$
        BEGIN
            INSERT INTO claim_permits (study_id, slot)
            SELECT NEW.id, g FROM generate_series(0, least(NEW.max_concurrent_trials, {MAX_PERMITS}) - 1) AS g
            ON CONFLICT DO NOTHING;
            RETURN NULL;
        END;
        $$ LANGUAGE plpgsql""")
    op.execute("CREATE TRIGGER studies_add_permits AFTER INSERT ON studies "
               "FOR EACH ROW EXECUTE FUNCTION stsweep_add_permits()")
    op.execute("CREATE TRIGGER studies_raise_permits AFTER UPDATE OF max_concurrent_trials ON studies "
               "FOR EACH ROW WHEN (NEW.max_concurrent_trials > OLD.max_concurrent_trials) "
               "EXECUTE FUNCTION stsweep_add_permits()")
    op.execute("""
        CREATE FUNCTION stsweep_free_permit() RETURNS trigger AS $$
        BEGIN
            UPDATE claim_permits SET trial_id = NULL WHERE trial_id = OLD.id;
            RETURN NULL;
        END;
        $$ LANGUAGE plpgsql""")
    op.execute("CREATE TRIGGER trials_free_permit AFTER UPDATE OF state ON trials "
               "FOR EACH ROW WHEN (OLD.state = 'running' AND NEW.state <> 'running') "
               "EXECUTE FUNCTION stsweep_free_permit()")
    op.execute("CREATE TRIGGER trials_free_permit_on_delete AFTER DELETE ON trials "
               "FOR EACH ROW WHEN (OLD.state = 'running') EXECUTE FUNCTION stsweep_free_permit()")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS trials_free_permit_on_delete ON trials")
    op.execute("DROP TRIGGER IF EXISTS trials_free_permit ON trials")
    op.execute("DROP FUNCTION IF EXISTS stsweep_free_permit()")
    op.execute("DROP TRIGGER IF EXISTS studies_raise_permits ON studies")
    op.execute("DROP TRIGGER IF EXISTS studies_add_permits ON studies")
    op.execute("DROP FUNCTION IF EXISTS stsweep_add_permits()")
    op.drop_index('ix_claim_permits_trial', table_name='claim_permits',
                  postgresql_where=sa.text('trial_id IS NOT NULL'))
    op.drop_index('ix_claim_permits_free', table_name='claim_permits', postgresql_where=sa.text('trial_id IS NULL'))
    op.drop_table('claim_permits')
    op.drop_index('ix_trials_running_worker', table_name='trials', postgresql_where=sa.text("state = 'running'"))
    op.drop_column('trials', 'search_index')
