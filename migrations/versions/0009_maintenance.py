"""maintenance off the claim path: the elected runner's lease and the reconciler's queue

Revision ID: 0009_maintenance
Revises: 0008_counts
Create Date: 2026-12-07

- `maintenance_lease`: one row per elected job (`maintenance`: the reaper and the reconciler). A process runs a
  round only while it holds the row (`holder`, until `expires_at`), taken with one short UPDATE ... WHERE
  expires_at < now(): no session state, so it works through PgBouncer in transaction mode.
- `reconcile_marks`: the reconciler's queue. A trigger adds a mark in the same transaction as each state change
  that may leave Optuna or the artifact store behind our tables: a trial leaving `running` (finished, failed,
  given back, reaped) or any other state change but a claim, and a study changing status. A round reads the due
  marks (`ix_reconcile_marks_due`), repairs those studies and trials only, and deletes the marks it read. No
  foreign key to `studies`: its check would share-lock the study row in every finish, and two finishes that
  then settle the study (FOR UPDATE) would deadlock; a mark of a deleted study is simply dropped by the round.
- `ix_trials_optuna_trial`: our row of an Optuna trial, found without reading the study's other rows.
- `ix_trials_kept`: a study's trials that still hold a final checkpoint (what retention may drop), and
  `ix_trials_confirm`: its confirm runs (what retention protects): retention costs O(kept), not O(trials).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009_maintenance'
down_revision = '0008_counts'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'maintenance_lease',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('holder', sa.String(length=200), nullable=True),
        sa.Column('expires_at', sa.DateTime(timezone=True), server_default=sa.text("'-infinity'"), nullable=False),
        sa.Column('rounds', sa.BigInteger(), server_default='0', nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    op.execute("INSERT INTO maintenance_lease (name) VALUES ('maintenance')")
    op.create_table(
        'reconcile_marks',
        sa.Column('id', sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column('study_id', sa.String(length=40), nullable=False),
        sa.Column('trial_id', sa.BigInteger(), nullable=True),
        sa.Column('due_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_reconcile_marks_due', 'reconcile_marks', ['due_at', 'id'], unique=False)
    op.create_index('ix_trials_optuna_trial', 'trials', ['optuna_trial_id'], unique=False,
                    postgresql_where=sa.text('optuna_trial_id IS NOT NULL'))
    op.create_index('ix_trials_kept', 'trials', ['study_id'], unique=False,
                    postgresql_where=sa.text('checkpoint_key IS NOT NULL'))
    op.create_index('ix_trials_confirm', 'trials', ['study_id'], unique=False,
                    postgresql_where=sa.text("kind = 'confirm'"))
    op.execute(
        """
        CREATE FUNCTION stsweep_mark_trial() RETURNS trigger AS $$
        BEGIN
            INSERT INTO reconcile_marks (study_id, trial_id) VALUES (NEW.study_id, NEW.id);
            RETURN NULL;
        END;
        $$ LANGUAGE plpgsql
        """
    )
    op.execute(
        """
        CREATE FUNCTION stsweep_mark_study() RETURNS trigger AS $$
        BEGIN
            INSERT INTO reconcile_marks (study_id) VALUES (NEW.id);
            RETURN NULL;
        END;
        $$ LANGUAGE plpgsql
        """
    )
    # A claim (queued -> running) needs no reconciling: the claim path pays nothing for this.
    op.execute(
        "CREATE TRIGGER trials_mark_reconcile AFTER UPDATE OF state ON trials FOR EACH ROW "
        "WHEN (OLD.state IS DISTINCT FROM NEW.state AND NEW.state <> 'running') "
        "EXECUTE FUNCTION stsweep_mark_trial()"
    )
    op.execute(
        "CREATE TRIGGER studies_mark_reconcile AFTER UPDATE OF status ON studies FOR EACH ROW "
        "WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION stsweep_mark_study()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS studies_mark_reconcile ON studies")
    op.execute("DROP TRIGGER IF EXISTS trials_mark_reconcile ON trials")
    op.execute("DROP FUNCTION IF EXISTS stsweep_mark_study()")
    op.execute("DROP FUNCTION IF EXISTS stsweep_mark_trial()")
    op.drop_index('ix_trials_confirm', table_name='trials', postgresql_where=sa.text("kind = 'confirm'"))
    op.drop_index('ix_trials_kept', table_name='trials', postgresql_where=sa.text('checkpoint_key IS NOT NULL'))
    op.drop_index('ix_trials_optuna_trial', table_name='trials',
                  postgresql_where=sa.text('optuna_trial_id IS NOT NULL'))
    op.drop_index('ix_reconcile_marks_due', table_name='reconcile_marks')
    op.drop_table('reconcile_marks')
    op.drop_table('maintenance_lease')
