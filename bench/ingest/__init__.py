"""Ingest benchmark: ``python -m bench.ingest``."""
