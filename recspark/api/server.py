"""``recspark api``: the lookup service on uvicorn, one process, at ``api.host:api.port``."""

from __future__ import annotations

import logging

import uvicorn

from recspark.api.app import build_app
from recspark.api.impressions import sink_for
from recspark.api.service import LookupService
from recspark.core.config import Config

log = logging.getLogger("recspark.api")


def serve(config: Config) -> None:
    """Serve until interrupted. The tables load in the background: until ``recommendations`` is
    in memory, /health and the list endpoints answer 503. Every list served is logged as an
    impression (``impressions.*``), written when the server stops at the latest."""
    service = LookupService(config, sink_for(config))
    log.info(
        "api: serving the lake at %s on http://%s:%d (tables polled every %gs)",
        config.lake.root,
        config.api.host,
        config.api.port,
        config.api.poll_seconds,
    )
    uvicorn.run(
        build_app(service),
        host=config.api.host,
        port=config.api.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        # No server header, no date header work per response: less per-request overhead.
        server_header=False,
        date_header=False,
    )
