"""Ingest: poll feeds politely, normalize entries to Articles and produce them to Kafka once each."""
