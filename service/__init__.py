"""stsweep control plane: HTTP API, study specs, database models, the trial queue and Optuna glue.

Nothing in this package imports torch; the API modules are the only ones that import FastAPI.
"""
