"""stsweep data plane: claim a trial, train it, report, checkpoint. Never imports FastAPI."""
