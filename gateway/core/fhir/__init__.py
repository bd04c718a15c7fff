"""FHIR R4 mapping: FR Core Patient and actors, PDSm ITI-65 Bundle, and its validation.

Everything here is pure: plain R4 dicts in and out, ids and times injected through
``SubmissionContext``. ``validate`` imports fhir.resources (about 0.2 s the first
time), so it is not imported from here; import ``gateway.core.fhir.validate`` where
validation is wanted (``relais check``, the MHD simulator).
"""

from __future__ import annotations

from gateway.core.fhir.actors import build_organization, build_practitioner, build_practitioner_role
from gateway.core.fhir.patient import build_patient
from gateway.core.fhir.pdsm import build_iti65_bundle, fhir_datetime

__all__ = [
    "build_patient",
    "build_practitioner",
    "build_organization",
    "build_practitioner_role",
    "build_iti65_bundle",
    "fhir_datetime",
]
