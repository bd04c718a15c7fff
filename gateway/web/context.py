"""The few things the operations API and the dashboard use, handed to them by the service.

Handlers reach ``request.app[WEB_KEY]``, never the whole ``Service``: the journal (the one
port every read and action goes through), the clock, the configured destinations' kinds,
replay (the intake runs the pipeline again) and a way to wake the dispatcher after an
action made work due.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from gateway.journal.base import Journal
from gateway.ports import Clock

__all__ = ["WEB_KEY", "Replayed", "WebContext"]


class Replayed(Protocol):
    """What a replay answers: the new exchange, its status and the holds it released."""

    @property
    def exchange_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def released(self) -> list[str]: ...


@dataclass(frozen=True)
class WebContext:
    journal: Journal
    clock: Clock
    #: destination name → kind (``dmp-xds``, ``mhd``, ``mssante``, ``file``, ``mllp``)
    destination_kinds: Mapping[str, str]
    #: run the pipeline again on a stored exchange (``KeyError`` when its bytes were pruned)
    replay: Callable[[str, str], Awaitable[Replayed]]
    #: an action made work due: the dispatcher should look now rather than at its next poll
    wake: Callable[[], None]
    #: cookies get ``Secure`` even behind a listener that terminates TLS itself
    secure_cookies: bool = False


WEB_KEY: web.AppKey[WebContext] = web.AppKey("relais_web", WebContext)
