"""backfill: move historical events from CSV/JSONL exports into the Embeddables events API."""

__version__ = "0.1.0"
