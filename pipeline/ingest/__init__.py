"""Ingest: raw recordings + capture metadata -> a validated, checksummed manifest."""
