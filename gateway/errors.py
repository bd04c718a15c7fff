"""One exception tree for the gateway, translated to ACKs / HTTP problems at the boundary.

    GatewayError
     ├── InboundError            something wrong with what a sender gave us
     │    ├── FramingError       MLLP framing (oversize, garbage)
     │    ├── DecodeError        bytes invalid for the declared charset
     │    ├── ParseError         not HL7 v2 / not XML / unreadable structure
     │    ├── ValidationError    well-formed but breaks a profile rule
     │    └── IdentityError      INS rules, identity status, conflicts
     ├── ConfigError             the configuration file or a setting is unusable
     ├── MappingError            could not build FHIR / XDS from valid input
     ├── JournalError            the store failed (never acknowledge then)
     └── DestinationError        outbound delivery failed
          ├── DestinationUnavailable   retryable (network, 5xx, timeouts)
          └── DestinationRejected      permanent (registry error, 4xx)
"""

from __future__ import annotations

__all__ = [
    "GatewayError",
    "InboundError",
    "FramingError",
    "DecodeError",
    "ParseError",
    "ValidationError",
    "IdentityError",
    "ConfigError",
    "MappingError",
    "JournalError",
    "DestinationError",
    "DestinationUnavailable",
    "DestinationRejected",
    "OperationError",
    "StartupRefused",
]


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose.

    ``code`` is a stable machine-readable code (``INS_KEY``, ``CDA_NOT_XML`` ...),
    ``location`` an HL7 v2 location (``PID-3``, ``OBX-5.5``) or an XPath-like path.
    """

    default_code = "GATEWAY_ERROR"

    def __init__(self, message: str, *, code: str | None = None, location: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.location = location

    def as_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "location": self.location}


class InboundError(GatewayError):
    default_code = "INBOUND_ERROR"


class FramingError(InboundError):
    default_code = "MLLP_FRAMING"


class DecodeError(InboundError):
    default_code = "CHARSET_INVALID"


class ParseError(InboundError):
    default_code = "PARSE_ERROR"


class ValidationError(InboundError):
    default_code = "VALIDATION_ERROR"


class IdentityError(InboundError):
    default_code = "IDENTITY_ERROR"


class ConfigError(GatewayError):
    """The configuration cannot be used: missing or unreadable file, bad TOML, unknown or mistyped key."""

    default_code = "CONFIG_INVALID"


class MappingError(GatewayError):
    default_code = "MAPPING_ERROR"


class JournalError(GatewayError):
    default_code = "JOURNAL_ERROR"


class DestinationError(GatewayError):
    default_code = "DESTINATION_ERROR"


class DestinationUnavailable(DestinationError):
    """Retryable: the destination could not be reached or asked us to come back later."""

    default_code = "DESTINATION_UNAVAILABLE"

    def __init__(self, message: str, *, code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class DestinationRejected(DestinationError):
    """Permanent: the destination refused the content; retrying would not help."""

    default_code = "DESTINATION_REJECTED"


class OperationError(Exception):
    """An operator action that cannot be done (unknown id, wrong state). ``status`` maps to HTTP.

    Not a ``GatewayError``: nothing is wrong with the gateway or its input, an operator asked
    for something the journal's state does not allow, and the API answers 404 / 409 / 400.
    """

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


class StartupRefused(Exception):
    """A configuration the gateway must not run with; ``relais serve`` prints it on one line."""
