"""projects: every study, data set and token belongs to one; roles; quotas and fair-share state

Revision ID: 0010_projects
Revises: 0009_maintenance
Create Date: 2026-12-08

- `projects`: a short name (`[a-z0-9][a-z0-9-]{0,62}`), the quotas (NULL: unlimited), the fair-share `share`,
  the claim scheduler's virtual time `vtime` (service/store/fair_share.py) and `data_dir`, the folder under
  STSWEEP_DATA_ROOT its studies' `path` references resolve in ('': the root itself, as before projects).
- A `default` project (data_dir '': files stay where they were) holds every existing study and data set, and every
  existing token becomes an admin of it: an upgraded deployment behaves as before until someone creates projects.
- `datasets.sha256` and `studies.idempotency_key` are unique per project only: one project never learns that
  another holds the same file or used the same key.
- `studies.project`, `datasets.project`, `api_tokens.project` reference `projects` (ON DELETE RESTRICT); a row
  written without one (an older writer) goes to `default`.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010_projects'
down_revision = '0009_maintenance'
branch_labels = None
depends_on = None

_NAME = "^[a-z0-9][a-z0-9-]{0,62}$"


def upgrade() -> None:
    op.create_table(
        'projects',
        sa.Column('name', sa.String(length=63), nullable=False),
        sa.Column('data_dir', sa.String(length=63), nullable=False),
        sa.Column('share', sa.Double(), server_default='1', nullable=False),
        sa.Column('max_active_studies', sa.Integer(), nullable=True),
        sa.Column('max_trials', sa.BigInteger(), nullable=True),
        sa.Column('max_stored_bytes', sa.BigInteger(), nullable=True),
        sa.Column('vtime', sa.Double(), server_default='0', nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('name'),
        sa.CheckConstraint(f"name ~ '{_NAME}'", name='ck_projects_name'),
        sa.CheckConstraint("share > 0 AND share <= 1000000", name='ck_projects_share'),
        sa.CheckConstraint("max_active_studies IS NULL OR max_active_studies >= 0", name='ck_projects_studies'),
        sa.CheckConstraint("max_trials IS NULL OR max_trials >= 0", name='ck_projects_trials'),
        sa.CheckConstraint("max_stored_bytes IS NULL OR max_stored_bytes >= 0", name='ck_projects_bytes'),
    )
    op.execute("INSERT INTO projects (name, data_dir) VALUES ('default', '')")
    for table in ('studies', 'datasets', 'api_tokens'):
        op.add_column(table, sa.Column('project', sa.String(length=63), server_default='default', nullable=False))
        op.create_foreign_key(f'fk_{table}_project', table, 'projects', ['project'], ['name'], ondelete='RESTRICT')
    op.add_column('api_tokens', sa.Column('role', sa.String(length=16), server_default='admin', nullable=False))
    op.alter_column('api_tokens', 'role', server_default=None)
    op.create_check_constraint('ck_api_tokens_role', 'api_tokens', "role IN ('admin', 'member', 'viewer')")
    op.create_index('ix_studies_project_created', 'studies', ['project', 'created_at'], unique=False)
    op.create_index('ix_datasets_project_created', 'datasets', ['project', 'created_at'], unique=False)
    op.drop_constraint('datasets_sha256_key', 'datasets', type_='unique')
    op.create_unique_constraint('uq_datasets_project_sha256', 'datasets', ['project', 'sha256'])
    op.drop_constraint('studies_idempotency_key_key', 'studies', type_='unique')
    op.create_unique_constraint('uq_studies_project_idempotency_key', 'studies', ['project', 'idempotency_key'])


def downgrade() -> None:
    op.drop_constraint('uq_studies_project_idempotency_key', 'studies', type_='unique')
    op.create_unique_constraint('studies_idempotency_key_key', 'studies', ['idempotency_key'])
    op.drop_constraint('uq_datasets_project_sha256', 'datasets', type_='unique')
    op.create_unique_constraint('datasets_sha256_key', 'datasets', ['sha256'])
    op.drop_index('ix_datasets_project_created', table_name='datasets')
    op.drop_index('ix_studies_project_created', table_name='studies')
    op.drop_constraint('ck_api_tokens_role', 'api_tokens', type_='check')
    op.drop_column('api_tokens', 'role')
    for table in ('studies', 'datasets', 'api_tokens'):
        op.drop_constraint(f'fk_{table}_project', table, type_='foreignkey')
        op.drop_column(table, 'project')
    op.drop_table('projects')
