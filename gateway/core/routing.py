"""Routes: which destinations a document goes to, by sender, message type and volet flags.

``[[route]]`` tables in the configuration are tried in order and the first that matches
names the destinations (Mirth users know them as channel filters). Without routes — or when
none matches — a document bound for the DMP goes to every document destination, as it always
did; a final route without conditions and with ``destinations = []`` turns that default off.
Pure: the intake hands the facts in, nothing here reads the journal or the clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

__all__ = ["Route", "choose_route", "type_matches"]


@dataclass(frozen=True)
class Route:
    name: str
    destinations: tuple[str, ...]
    sender_application: str | None = None  # MSH-3 (exact)
    sender_facility: str | None = None  # MSH-4 (exact)
    http_client: str | None = None  # the authenticated sender of a CDA posted over HTTP
    message_type: str | None = None  # "MDM^T02" exact, "MDM" every MDM event, "ORU^R0*" a pattern
    flags: tuple[str, ...] = field(default_factory=tuple)  # volet flags that must be Y (DESTDMP …)


def type_matches(pattern: str, message_type: str | None) -> bool:
    value = message_type or ""
    if "*" in pattern or "?" in pattern:
        return fnmatchcase(value, pattern)
    if "^" in pattern:
        return value == pattern or value.startswith(pattern + "^")  # MDM^T02 matches MDM^T02^MDM_T02
    return value == pattern or value.startswith(pattern + "^")  # "MDM": every MDM event


def _matches(route: Route, *, sender_application: str | None, sender_facility: str | None,
             http_client: str | None, message_type: str | None, flags: Mapping[str, bool]) -> bool:
    if route.sender_application is not None and route.sender_application != sender_application:
        return False
    if route.sender_facility is not None and route.sender_facility != sender_facility:
        return False
    if route.http_client is not None and route.http_client != http_client:
        return False
    if route.message_type is not None and not type_matches(route.message_type, message_type):
        return False
    return all(flags.get(flag) for flag in route.flags)


def choose_route(routes: Sequence[Route], *, sender_application: str | None, sender_facility: str | None,
                 http_client: str | None, message_type: str | None, flags: Mapping[str, bool]) -> Route | None:
    """The first route that matches, or None (then the default applies)."""
    for route in routes:
        if _matches(route, sender_application=sender_application, sender_facility=sender_facility,
                    http_client=http_client, message_type=message_type, flags=flags):
            return route
    return None
