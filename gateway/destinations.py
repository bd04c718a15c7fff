"""The configured destinations: which exist, of what kind, and how each adapter is built.

Each adapter module turns its own ``[[destination]]`` table into its typed configuration
(``destination_from_settings``): secrets from the environment, certificates, option checks
all live with the adapter that uses them. This module only knows the kinds and where their
builders are, imported when a destination of that kind is configured (``relais send``
does not pay for the DMP's cryptography).
"""

from __future__ import annotations

import importlib
from typing import Protocol

from gateway.ports import Clock, Destination
from gateway.settings import DestinationSettings, Settings

__all__ = ["DOCUMENT_KINDS", "KINDS", "build_destinations", "configured", "destination_kinds"]

#: the kinds that receive documents (the others carry mail or business acknowledgements)
DOCUMENT_KINDS = ("dmp-xds", "mhd", "file")

#: kind → the adapter module whose ``destination_from_settings`` builds it
KINDS = {
    "file": "adapters.file",
    "mllp": "adapters.mllp",
    "mhd": "adapters.mhd.client",
    "dmp-xds": "adapters.dmp.config",
    "mssante": "adapters.mssante.client",
}


class Builder(Protocol):
    def __call__(self, d: DestinationSettings, settings: Settings, clock: Clock) -> Destination: ...


def configured(settings: Settings) -> list[DestinationSettings]:
    """The destinations of the configuration; with no document destination, a ``file`` outbox."""
    out = list(settings.destinations)
    if not any(d.kind in DOCUMENT_KINDS for d in out):
        out.append(DestinationSettings(name="outbox", kind="file", directory=str(settings.data_dir / "outbox")))
    return out


def destination_kinds(settings: Settings) -> dict[str, str]:
    """Name → kind, read from the configuration alone (nothing built, no key generated)."""
    return {d.name: d.kind for d in configured(settings)}


def build_destinations(settings: Settings, clock: Clock) -> dict[str, Destination]:
    """Instantiate every configured destination (``StartupRefused`` / ``ValueError`` on a bad one)."""
    dests: dict[str, Destination] = {}
    for d in configured(settings):
        module = KINDS.get(d.kind)
        if module is None:
            raise ValueError(f"unknown destination kind {d.kind!r}")
        build: Builder = importlib.import_module(module).destination_from_settings
        dests[d.name] = build(d, settings, clock)
    return dests
