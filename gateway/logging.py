"""One structlog configuration: JSON lines on stderr, ids from context variables, redaction.

Log events, never payloads. The redaction processor is a safety net behind that rule:
it masks anything that looks like an INS/NIR (15 characters, digits with 2A/2B), long
base64 runs, and values of keys that should never carry patient data.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO, cast

import structlog

__all__ = ["configure_logging", "redact", "FORBIDDEN_KEYS"]

# 13 + 2 characters, Corsica letters allowed at 6-7: the INS / NIR shape.
_INS_LIKE = re.compile(r"(?<![0-9A-Za-z])[1-478][0-9]{4}(?:[0-9]{2}|2[AB])[0-9]{8}(?![0-9A-Za-z])")
_B64_RUN = re.compile(r"[A-Za-z0-9+/]{80,}={0,2}")
FORBIDDEN_KEYS = frozenset(
    {"name", "family", "given", "birth_date", "ins", "nir", "body", "document", "raw", "payload", "text"}
)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        value = _INS_LIKE.sub("[INS]", value)
        return _B64_RUN.sub("[BASE64]", value)
    if isinstance(value, dict):
        return {k: ("[REDACTED]" if k in FORBIDDEN_KEYS else _scrub(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask INS-like numbers, base64 bodies and forbidden keys."""
    for key in list(event_dict):
        if key in FORBIDDEN_KEYS:
            event_dict[key] = "[REDACTED]"
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is *now* (pytest swaps it between tests)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "info", stream: Any = None) -> None:
    """Configure structlog for JSON output on ``stream`` (stderr by default)."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, stream or _CurrentStderr())),
        cache_logger_on_first_use=False,
    )
