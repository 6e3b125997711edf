"""The delivery path's API connections, kept open while nothing is written.

A GitRepo write that finds no idle pooled connection opens one, and the TCP + TLS handshake
(several milliseconds, on both ends) is added to the delivery waiting for it. Idle connections are
closed after `kube.KEEPALIVE_SECONDS`, so without this the first push after a quiet minute, which at
the scale most users run is most pushes, would always pay it. Fleet's Go client does not: it
multiplexes every call over one HTTP/2 connection that its watches keep busy.

So `serve` warms the pool once at start and again every WARM_EVERY_SECONDS (half the keep-alive),
with `--api-warm-connections` concurrent `GET /version` calls: each holds a connection of its own,
so idle ones are reused and their idle clocks reset, and only missing ones are opened.
"""

from __future__ import annotations

import asyncio
import logging

from controller.kube import KEEPALIVE_SECONDS, ApiHttp

log = logging.getLogger("fleet_webhook.api_pool")

WARM_EVERY_SECONDS = KEEPALIVE_SECONDS / 2


async def keep_warm(http: ApiHttp, connections: int, every: float = WARM_EVERY_SECONDS) -> None:
    """Warm the pool to `connections` now and every `every` seconds until cancelled; never raises."""
    reachable = True
    while True:
        try:
            answered = await http.warm(connections)
        except Exception:  # e.g. an unreadable token file: the writes will report it; keep trying
            log.debug("warming API connections failed", exc_info=True)
            answered = 0
        if reachable and not answered:
            log.warning("API server unreachable while warming connections", extra={"connections": connections})
        reachable = answered > 0
        await asyncio.sleep(every)
