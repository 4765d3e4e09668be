"""Alembic revisions for stsweep's own tables (version table: stsweep_alembic_version)."""
