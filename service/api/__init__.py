"""The HTTP API (FastAPI). Only this subpackage imports FastAPI."""
