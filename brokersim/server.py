"""Run the simulator under uvicorn."""

from __future__ import annotations

import uvicorn

from brokersim.app import create_app
from brokersim.config import SimConfig


def serve(config: SimConfig) -> None:
    uvicorn.run(
        create_app(config),
        host=config.host,
        port=config.port,
        log_level="warning",
        access_log=False,
        # Stalled accept-then-timeout responses must not hold up a shutdown.
        timeout_graceful_shutdown=1,
    )
