"""API Lambda: API Gateway (REST API v1 or HTTP API v2 proxy events) -> the realtime API app.

Mangum adapts the event to ASGI and calls the same application `sumpipe serve` runs, so the routes,
validation and errors are identical in both places.
"""

from __future__ import annotations

from mangum import Mangum

from sumpipe.api.app import app, engine

# Init phase: load the vectors and warm the summarizer once per execution environment, before
# the first invocation. Mangum's lifespan is off because it would run on every invocation.
engine.warm()

lambda_handler = Mangum(app, lifespan="off")
