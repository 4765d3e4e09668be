"""per-study trial counts, kept by triggers on trials

Revision ID: 0008_counts
Revises: 0007_claims
Create Date: 2026-12-07

`trial_counts` holds, per study, trial state and kind, how many trials there are and what the study summary,
its ETA and `/metrics` add up over them: attempts, examples seen (and planned, for the trials with a plan),
checkpoint bytes, and the reaps and give-backs recorded in the trials' histories. Triggers on `trials` keep it
in the transaction of every change (every code path, present or future, keeps it right), so the reads sum a
few rows per study instead of aggregating every trial.

- Writers never wait on each other: each change *inserts* delta rows (a row-level trigger for updates,
  statement-level triggers with transition tables for inserts and deletes, so a study's 100,000 slots are one
  row). No row is updated in place, so no claim or finish waits on a counts row.
- A running trial's examples, plan and checkpoint bytes change every second (progress reports): they are not
  counted here while it runs (only its count and attempts are), and the reads add them from the running rows.
  So a progress report fires no trigger work.
- Compaction: now and then (one change in 8) a writer folds a study's delta rows into one row per (state, kind),
  under a transaction-level advisory try-lock (works through PgBouncer in transaction mode; a writer that does
  not get it skips compaction, never waits). A reader sums what it sees in one snapshot, compacted or not.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008_counts'
down_revision = '0007_claims'
branch_labels = None
depends_on = None

# The advisory-lock class of compaction (pg_try_advisory_xact_lock(class, hashtext(study_id))): the two-key
# space, apart from any one-key advisory lock.
COMPACT_LOCK_CLASS = 19002
# One trigger call in COMPACT_EVERY folds its studies' delta rows.
COMPACT_EVERY = 8

_SUMS = ("trials", "attempts", "examples", "seen_of_planned", "planned", "checkpoint_bytes", "reaps", "given_back",
         "given_back_fault")
_COLUMNS = ", ".join(_SUMS)


def _contribution(source: str) -> str:
    """SELECT study_id, state, kind and the summed columns of the trial rows in `source` (a relation with the
    trials' columns and an int `sign`): what those rows add to trial_counts (sign -1: take away). A running
    trial's examples, plan and checkpoint bytes are left out (the reads take them from the running rows).
    Never raises whatever a row holds (a history that is not an array counts no events)."""
    idle = "r.state <> 'running'"
    planned = f"{idle} AND r.planned_examples > 0"
    return f"""
        SELECT r.study_id, r.state, r.kind,
               sum(r.sign) AS trials,
               sum(r.sign * r.attempts) AS attempts,
               sum(r.sign * CASE WHEN {idle} THEN r.examples_seen ELSE 0 END) AS examples,
               sum(r.sign * CASE WHEN {planned} THEN r.examples_seen ELSE 0 END) AS seen_of_planned,
               sum(r.sign * CASE WHEN {planned} THEN r.planned_examples ELSE 0 END) AS planned,
               sum(r.sign * CASE WHEN {idle} THEN coalesce(r.checkpoint_bytes, 0) ELSE 0 END) AS checkpoint_bytes,
               sum(r.sign * h.reaps) AS reaps,
               sum(r.sign * h.given_back) AS given_back,
               sum(r.sign * h.given_back_fault) AS given_back_fault
        FROM ({source}) AS r
        CROSS JOIN LATERAL (
            SELECT count(*) FILTER (WHERE e->>'event' = 'lease expired') AS reaps,
                   count(*) FILTER (WHERE starts_with(e->>'event', 'given back') AND e->>'fault' IS NULL)
                       AS given_back,
                   count(*) FILTER (WHERE starts_with(e->>'event', 'given back') AND e->>'fault' IS NOT NULL)
                       AS given_back_fault
            FROM jsonb_array_elements(CASE WHEN jsonb_typeof(r.history) = 'array' THEN r.history
                                           ELSE '[]'::jsonb END) AS e
        ) AS h
        GROUP BY r.study_id, r.state, r.kind
    """


_NONZERO = " OR ".join(f"sum({c}) <> 0" for c in _SUMS)


def _insert_deltas(source: str) -> str:
    return (f"INSERT INTO trial_counts (study_id, state, kind, {_COLUMNS}) "
            f"SELECT study_id, state, kind, {_COLUMNS} FROM ({_contribution(source)}) AS d "
            f"WHERE {' OR '.join(f'{c} <> 0' for c in _SUMS)}")


_ROW_FIELDS = "study_id, state, kind, attempts, examples_seen, planned_examples, checkpoint_bytes, history"


def _old_and_new() -> str:
    """The updated row as it was (sign -1) and as it is (sign +1), inside a row-level trigger."""
    fields = _ROW_FIELDS.split(", ")
    was = ", ".join(f"OLD.{f} AS {f}" for f in fields)
    now = ", ".join(f"NEW.{f}" for f in fields)
    return f"SELECT -1 AS sign, {was} UNION ALL SELECT 1, {now}"


def _compact_maybe(studies: str) -> str:
    """plpgsql: now and then, fold the delta rows of the studies `studies` (a SELECT of study ids)."""
    return f"""
        IF random() < 1.0 / {COMPACT_EVERY} AND current_setting('transaction_isolation') = 'read committed' THEN
            PERFORM stsweep_compact_trial_counts(sid) FROM ({studies}) AS c(sid);
        END IF;
    """


def upgrade() -> None:
    op.create_table(
        'trial_counts',
        sa.Column('id', sa.BigInteger(), nullable=False),
        sa.Column('study_id', sa.String(length=40), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        *[sa.Column(c, sa.BigInteger(), server_default='0', nullable=False) for c in _SUMS],
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_trial_counts_study', 'trial_counts', ['study_id'], unique=False)

    op.execute(f"""
        CREATE FUNCTION stsweep_compact_trial_counts(sid varchar) RETURNS void AS $$
        BEGIN
            IF NOT pg_try_advisory_xact_lock({COMPACT_LOCK_CLASS}, hashtext(sid)) THEN
                RETURN;  -- another transaction is compacting this study: never wait for it
            END IF;
            WITH gone AS (DELETE FROM trial_counts WHERE study_id = sid RETURNING *)
            INSERT INTO trial_counts (study_id, state, kind, {_COLUMNS})
            SELECT sid, state, kind, {', '.join(f'sum({c})' for c in _SUMS)}
            FROM gone GROUP BY state, kind
            HAVING {_NONZERO};
        END;
        $$ LANGUAGE plpgsql
    """)
    op.execute(f"""
        CREATE FUNCTION stsweep_count_trial_updated() RETURNS trigger AS $$
        BEGIN
            {_insert_deltas(_old_and_new())};
            {_compact_maybe("SELECT DISTINCT s FROM (VALUES (OLD.study_id), (NEW.study_id)) AS v(s)")}
            RETURN NULL;
        END;
        $$ LANGUAGE plpgsql
    """)
    op.execute(f"""
        CREATE FUNCTION stsweep_count_trials_inserted() RETURNS trigger AS $$
        BEGIN
            {_insert_deltas(f"SELECT 1 AS sign, {_ROW_FIELDS} FROM changed")};
            {_compact_maybe("SELECT DISTINCT study_id FROM changed")}
            RETURN NULL;
        END;
        $$ LANGUAGE plpgsql
    """)
    # A study's own deletion cascades to its trials: its counts go with it (the studies trigger below), so trials
    # whose study is gone add nothing.
    op.execute(f"""
        CREATE FUNCTION stsweep_count_trials_deleted() RETURNS trigger AS $$
        BEGIN
            {_insert_deltas(f"SELECT -1 AS sign, {_ROW_FIELDS} FROM changed "
                            "WHERE EXISTS (SELECT 1 FROM studies WHERE studies.id = changed.study_id)")};
            {_compact_maybe("SELECT DISTINCT study_id FROM changed")}
            RETURN NULL;
        END;
        $$ LANGUAGE plpgsql
    """)
    op.execute("""
        CREATE FUNCTION stsweep_drop_trial_counts() RETURNS trigger AS $$
        BEGIN
            IF TG_OP = 'TRUNCATE' THEN
                DELETE FROM trial_counts;
            ELSE
                DELETE FROM trial_counts WHERE study_id = OLD.id;
            END IF;
            RETURN NULL;
        END;
        $$ LANGUAGE plpgsql
    """)
    # Backfill and triggers in one transaction, with writes to trials held off meanwhile: no change is counted
    # twice or missed.
    op.execute("LOCK TABLE trials IN SHARE ROW EXCLUSIVE MODE")
    op.execute(_insert_deltas(f"SELECT 1 AS sign, {_ROW_FIELDS} FROM trials"))
    op.execute("""
        CREATE TRIGGER trials_count_update AFTER UPDATE OF study_id, state, kind, attempts, examples_seen,
            planned_examples, checkpoint_bytes, history ON trials
        FOR EACH ROW
        WHEN (OLD.study_id IS DISTINCT FROM NEW.study_id OR OLD.state IS DISTINCT FROM NEW.state
              OR OLD.kind IS DISTINCT FROM NEW.kind OR OLD.attempts IS DISTINCT FROM NEW.attempts
              OR OLD.history IS DISTINCT FROM NEW.history
              OR (NEW.state <> 'running'
                  AND (OLD.examples_seen, OLD.planned_examples, OLD.checkpoint_bytes)
                      IS DISTINCT FROM (NEW.examples_seen, NEW.planned_examples, NEW.checkpoint_bytes)))
        EXECUTE FUNCTION stsweep_count_trial_updated()
    """)
    op.execute("CREATE TRIGGER trials_count_insert AFTER INSERT ON trials REFERENCING NEW TABLE AS changed "
               "FOR EACH STATEMENT EXECUTE FUNCTION stsweep_count_trials_inserted()")
    op.execute("CREATE TRIGGER trials_count_delete AFTER DELETE ON trials REFERENCING OLD TABLE AS changed "
               "FOR EACH STATEMENT EXECUTE FUNCTION stsweep_count_trials_deleted()")
    op.execute("CREATE TRIGGER trials_count_truncate AFTER TRUNCATE ON trials "
               "FOR EACH STATEMENT EXECUTE FUNCTION stsweep_drop_trial_counts()")
    op.execute("CREATE TRIGGER studies_drop_trial_counts AFTER DELETE ON studies "
               "FOR EACH ROW EXECUTE FUNCTION stsweep_drop_trial_counts()")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS studies_drop_trial_counts ON studies")
    for name in ("update", "insert", "delete", "truncate"):
        op.execute(f"DROP TRIGGER IF EXISTS trials_count_{name} ON trials")
    for fn in ("stsweep_drop_trial_counts()", "stsweep_count_trials_deleted()", "stsweep_count_trials_inserted()",
               "stsweep_count_trial_updated()", "stsweep_compact_trial_counts(varchar)"):
        op.execute(f"DROP FUNCTION IF EXISTS {fn}")
    op.drop_index('ix_trial_counts_study', table_name='trial_counts')
    op.drop_table('trial_counts')
