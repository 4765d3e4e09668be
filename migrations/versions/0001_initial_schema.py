"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-26

Our tables, the change sequence behind the dashboard's cursor, and the trigger that stamps every update.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


TABLES_WITH_SEQ = ("studies", "trials", "intermediate_values")


def upgrade() -> None:
    op.execute("CREATE SEQUENCE change_seq")
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_table('datasets',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('format', sa.String(length=16), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('storage_key', sa.Text(), nullable=False),
    sa.Column('row_count', sa.BigInteger(), nullable=False),
    sa.Column('columns', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('duplicate_rows', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('preview', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sha256')
    )
    op.create_table('studies',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('spec', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='queued', nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=True),
    sa.Column('optuna_study_name', sa.String(length=80), nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=True),
    sa.Column('request_hash', sa.String(length=64), nullable=True),
    sa.Column('n_trials', sa.Integer(), nullable=False),
    sa.Column('max_concurrent_trials', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('timeout_seconds', sa.Double(), nullable=True),
    sa.Column('direction', sa.String(length=8), nullable=False),
    sa.Column('baseline_value', sa.Double(), nullable=True),
    sa.Column('baseline_subset_value', sa.Double(), nullable=True),
    sa.Column('test_metric', sa.String(length=100), nullable=True),
    sa.Column('test_value', sa.Double(), nullable=True),
    sa.Column('failure_streak', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_failure_reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('seq', sa.BigInteger(), server_default=sa.text("nextval('change_seq')"), nullable=False),
    sa.CheckConstraint("status IN ('queued', 'running', 'paused', 'stopped', 'completed', 'failed')", name='ck_studies_status'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('idempotency_key'),
    sa.UniqueConstraint('optuna_study_name')
    )
    op.create_index('ix_studies_seq', 'studies', ['seq'], unique=False)
    op.create_index('ix_studies_status_created', 'studies', ['status', 'created_at'], unique=False)
    op.create_table('workers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('device', sa.String(length=100), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='idle', nullable=False),
    sa.Column('current_trial_id', sa.BigInteger(), nullable=True),
    sa.Column('trials_done', sa.Integer(), server_default='0', nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('last_heartbeat_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('stopped_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('study_datasets',
    sa.Column('study_id', sa.String(length=40), nullable=False),
    sa.Column('dataset_id', sa.String(length=40), nullable=False),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('study_id', 'dataset_id', 'role')
    )
    op.create_table('trials',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('study_id', sa.String(length=40), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), server_default='queued', nullable=False),
    sa.Column('params', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('optuna_trial_id', sa.Integer(), nullable=True),
    sa.Column('value', sa.Double(), nullable=True),
    sa.Column('rank_key', sa.Double(), nullable=True),
    sa.Column('metrics', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('below_baseline', sa.Boolean(), nullable=True),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('failure_reason', sa.Text(), nullable=True),
    sa.Column('lease_token', sa.UUID(), nullable=True),
    sa.Column('worker_id', sa.Integer(), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('examples_seen', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('planned_examples', sa.BigInteger(), nullable=True),
    sa.Column('last_eval', sa.Double(), nullable=True),
    sa.Column('eta_seconds', sa.Double(), nullable=True),
    sa.Column('resume_key', sa.Text(), nullable=True),
    sa.Column('resume_sha256', sa.String(length=64), nullable=True),
    sa.Column('resume_examples', sa.BigInteger(), nullable=True),
    sa.Column('checkpoint_key', sa.Text(), nullable=True),
    sa.Column('checkpoint_sha256', sa.String(length=64), nullable=True),
    sa.Column('checkpoint_bytes', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('seq', sa.BigInteger(), server_default=sa.text("nextval('change_seq')"), nullable=False),
    sa.CheckConstraint("state IN ('queued', 'running', 'complete', 'pruned', 'failed')", name='ck_trials_state'),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['worker_id'], ['workers.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('study_id', 'number', name='uq_trials_study_number')
    )
    op.create_index('ix_trials_claim', 'trials', ['study_id', 'state', 'number'], unique=False)
    op.create_index('ix_trials_lease', 'trials', ['lease_expires_at'], unique=False, postgresql_where=sa.text("state = 'running'"))
    op.create_index('ix_trials_study_seq', 'trials', ['study_id', 'seq'], unique=False)
    op.create_index('ix_trials_best', 'trials', ['study_id', 'rank_key', 'number'], unique=False,
                    postgresql_where=sa.text("state = 'complete' AND rank_key IS NOT NULL"))
    op.create_table('intermediate_values',
    sa.Column('trial_id', sa.BigInteger(), nullable=False),
    sa.Column('examples_seen', sa.BigInteger(), nullable=False),
    sa.Column('value', sa.Double(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('seq', sa.BigInteger(), server_default=sa.text("nextval('change_seq')"), nullable=False),
    sa.ForeignKeyConstraint(['trial_id'], ['trials.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('trial_id', 'examples_seen')
    )
    op.create_index('ix_intermediate_seq', 'intermediate_values', ['seq'], unique=False)

    op.execute(
        """
        CREATE FUNCTION stsweep_bump_seq() RETURNS trigger AS $$
        BEGIN
            NEW.seq := nextval('change_seq');
            RETURN NEW;
        END;
        $$ LANGUAGE plpgsql
        """
    )
    for table in TABLES_WITH_SEQ:
        op.execute(
            f"CREATE TRIGGER {table}_bump_seq BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION stsweep_bump_seq()"
        )


def downgrade() -> None:
    for table in TABLES_WITH_SEQ:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_bump_seq ON {table}")
    op.execute("DROP FUNCTION IF EXISTS stsweep_bump_seq()")
    op.drop_index('ix_intermediate_seq', table_name='intermediate_values')
    op.drop_table('intermediate_values')
    op.drop_index('ix_trials_best', table_name='trials', postgresql_where=sa.text("state = 'complete' AND rank_key IS NOT NULL"))
    op.drop_index('ix_trials_study_seq', table_name='trials')
    op.drop_index('ix_trials_lease', table_name='trials', postgresql_where=sa.text("state = 'running'"))
    op.drop_index('ix_trials_claim', table_name='trials')
    op.drop_table('trials')
    op.drop_table('study_datasets')
    op.drop_table('workers')
    op.drop_index('ix_studies_status_created', table_name='studies')
    op.drop_index('ix_studies_seq', table_name='studies')
    op.drop_table('studies')
    op.drop_table('datasets')
    op.drop_table('api_tokens')
    op.execute("DROP SEQUENCE change_seq")
