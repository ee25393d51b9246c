"""The web process's resources: the worker's Runtime (settings, database with its event
publisher, Redis, brokerage) plus what only the web needs (the signal client)."""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from bootstrap import Runtime
from db.engine import Database

if TYPE_CHECKING:
    from strategy_client.client import SignalClient


class WebRuntime(Runtime):
    @cached_property
    def database(self) -> Database:
        if not self.settings.database_url:
            raise RuntimeError("ARBITER_DATABASE_URL is not set (run `arbiter up`, or set it)")
        # Requests do not retry on a dropped connection: ping before each checkout.
        return Database(self.settings.database_url, pool_size=10,
                        application_name=f"arbiter-web-{os.getpid()}", pre_ping=True)  # fmt: skip

    @cached_property
    def signal_client(self) -> SignalClient:
        """HTTP intake enqueues through the same client a Python strategy uses. The caller
        proved itself with its token; the web signs on the strategy's behalf with the
        strategy's key, so intake's signature check holds for every path in."""
        from strategy_client.client import SignalClient

        return SignalClient(self.settings.redis_url, keys=self.signing_key)

    def signing_key(self, strategy: str) -> str | None:
        from sqlalchemy import select

        from db.models import Strategy

        with self.database.sessions() as session:
            return session.scalar(select(Strategy.signing_key).where(Strategy.name == strategy))

    @property
    def redis_url(self) -> str:
        from core.settings import DEFAULT_REDIS_URL

        return self.settings.redis_url or DEFAULT_REDIS_URL

    def start(self) -> None:
        _ = self.publisher  # wire the after-commit hook before the first change

    def close(self) -> None:
        for name in ("signal_client", "redis"):
            resource = self.__dict__.pop(name, None)
            if resource is not None:
                resource.close()
        publisher = self.__dict__.get("publisher")
        if publisher is not None:
            publisher.flush_marks()
        database = self.__dict__.pop("database", None)
        if database is not None:
            database.dispose()


def runtime_of(request: Request) -> WebRuntime:
    rt: WebRuntime = request.app.state.runtime
    return rt


def runtime_of_app(request: Request) -> WebRuntime:
    """The runtime as a route dependency: `rt: WebRuntime = Depends(runtime_of_app)`."""
    return runtime_of(request)


Rt = Annotated[WebRuntime, Depends(runtime_of_app)]
