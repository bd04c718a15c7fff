"""Rules and the violations they report.

Each rule has a stable code (``AREA-TOPIC-NN``), the reference of the text it comes from,
the IHE ``errorCode`` a registry answers with (ITI TF-3 §4.2.4.1, Table 4.2.4.1-2) and,
for refusals that are SOAP faults rather than registry errors, the fault subcode
(WS-Security 1.1 SOAP Message Security §12: ``wsse:InvalidSecurity``,
``wsse:FailedCheck``, ``wsse:SecurityTokenUnavailable``; WS-Addressing 1.0 SOAP Binding §6).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Rule", "Violation", "RULES"]

RULES: dict[str, Rule] = {}


@dataclass(frozen=True)
class Violation:
    """One broken rule in one request."""

    rule: str
    text: str
    reference: str
    error_code: str
    severity: str = "error"
    fault: str | None = None

    def as_json(self) -> dict[str, str]:
        """The /_sim form: rule, text, reference."""
        return {"rule": self.rule, "text": self.text, "reference": self.reference}


@dataclass(frozen=True)
class Rule:
    """A conformance rule; ``Rule(...)`` registers itself in ``RULES`` under its code."""

    code: str
    summary: str
    reference: str
    error_code: str = "XDSRegistryMetadataError"
    fault: str | None = None

    def __post_init__(self) -> None:
        if self.code in RULES and RULES[self.code] != self:
            raise ValueError(f"rule code {self.code} defined twice")
        RULES[self.code] = self

    def __call__(self, text: str, *, severity: str = "error") -> Violation:
        return Violation(self.code, text, self.reference, self.error_code, severity, self.fault)
