"""Wirewatch: streaming news monitoring. Shared records, settings, Kafka and Redis access, and the CLI."""

__version__ = "0.1.0"
