"""HTTP serving: FastAPI app factory, request schemas, dynamic batcher (needs the [serve] extra)."""
