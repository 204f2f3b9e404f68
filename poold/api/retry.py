"""Requests that lose a race in the store are run again, not answered with a 500.

Every route runs through :class:`RetryingRoute`: when the store answers that a transaction
lost a race (a deadlock or serialization failure on PostgreSQL, a busy database on SQLite;
``poold.db.session.is_retryable``), the whole request is handled again after a short,
jittered pause, up to ``ATTEMPTS`` times; after that the caller gets 503 with
``Retry-After``. A route's transactions are each atomic, and the ones a retried request runs
again are written to be repeatable (a report already applied is answered as before).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from fastapi.routing import APIRoute

from poold.db.session import is_retryable

log = logging.getLogger(__name__)

ATTEMPTS = 5
BASE_DELAY_S = 0.02


class StoreBusy(Exception):
    """The store kept refusing a request's transaction as a lost race."""


class RetryingRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def retrying(request: Request) -> Response:
            attempt = 1
            while True:
                try:
                    return await handler(request)
                except Exception as exc:
                    if not is_retryable(exc):
                        raise
                    why = str(getattr(exc, "orig", exc)).splitlines()[0]
                    log.info("%s %s lost a race in the store (attempt %d of %d): %s", request.method, request.url.path, attempt, ATTEMPTS, why)
                    if attempt == ATTEMPTS:
                        raise StoreBusy(why) from exc
                await asyncio.sleep(BASE_DELAY_S * 2 ** (attempt - 1) * (0.5 + random.random()))
                attempt += 1

        return retrying
