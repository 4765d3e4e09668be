"""Persistence and every state change: sessions, tables, the queue, studies, data sets, checkpoints, tokens,
dashboard reads and the Optuna bridge. All SQL of the project lives here (and in `migrations/`)."""
