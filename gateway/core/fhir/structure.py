"""FHIR R4 structure of a Bundle, judged by fhir.resources alone (``FHIR_INVALID``).

The whole Bundle is parsed with ``fhir.resources.R4B`` (R4B has the same Bundle, List,
DocumentReference, Binary, Patient, Practitioner, PractitionerRole and Organization as R4;
fhir.resources 8 ships no R4 package). Nothing here comes from our PDSm builder, so the MHD
simulator may use it to judge what the client sent without sharing the client's mistakes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic
from fhir.resources.R4B.bundle import Bundle

from gateway.model import Finding

__all__ = ["validate_structure"]


def _path(loc: tuple[int | str, ...], root: str = "Bundle") -> str:
    out = root
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def validate_structure(bundle: Mapping[str, Any]) -> list[Finding]:
    """R4 structural findings (``FHIR_INVALID``) from parsing with fhir.resources R4B."""
    if bundle.get("resourceType") != "Bundle":
        return [Finding("FHIR_INVALID", "resourceType is not Bundle", "Bundle.resourceType")]
    try:
        Bundle.model_validate(dict(bundle))
    except pydantic.ValidationError as exc:
        return [
            # The input echo is left out: it can hold patient data.
            Finding("FHIR_INVALID", err["msg"], _path(tuple(err["loc"])))
            for err in exc.errors(include_url=False, include_input=False)
        ]
    except (TypeError, ValueError) as exc:  # model-level validators may raise these directly
        return [Finding("FHIR_INVALID", type(exc).__name__, "Bundle")]
    return []
