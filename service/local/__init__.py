"""One machine, batteries included: the embedded PostgreSQL, `stsweep up` and the demo with its data."""
