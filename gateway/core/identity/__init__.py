"""Identity rules: INS matricule checks, identity status, INS traits (pure core)."""

from __future__ import annotations

from gateway.core.identity.ins import (
    INS_KINDS,
    OID_INS_NIA,
    OID_INS_NIR,
    OID_INS_NIR_DEMO,
    OID_INS_NIR_TEST,
    TEST_KINDS,
    InsCode,
    InsVerdict,
    compute_key,
    validate_ins,
)
from gateway.core.identity.status import (
    CONVENTIONS,
    DEFAULT_CONVENTION,
    IdentityConvention,
    StatusAssessment,
    assess_status,
    reliability_extension,
)
from gateway.core.identity.traits import STRICT_TRAITS, normalise_trait, strict_traits_differ

__all__ = [
    "INS_KINDS",
    "OID_INS_NIA",
    "OID_INS_NIR",
    "OID_INS_NIR_DEMO",
    "OID_INS_NIR_TEST",
    "TEST_KINDS",
    "InsCode",
    "InsVerdict",
    "compute_key",
    "validate_ins",
    "CONVENTIONS",
    "DEFAULT_CONVENTION",
    "IdentityConvention",
    "StatusAssessment",
    "assess_status",
    "reliability_extension",
    "STRICT_TRAITS",
    "normalise_trait",
    "strict_traits_differ",
]
