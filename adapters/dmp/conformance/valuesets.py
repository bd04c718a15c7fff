"""The DMP value sets JDV_J57…J66 as (code, code system OID) pairs.

Data, not code: read from ``profiles/terminology/jdv_*.json``, the reviewed extracts of the
ANS "Terminologies de Santé" IG (ansforge/IG-terminologie-de-sante, ``ig/main``; each file
records the commit it came from). The extracts are used rather than the FHIR ValueSets of
``../shared/corpus/terminology`` because the wire carries code-system OIDs (``codingScheme``
slots, VIHF ``codeSystem``) while the FHIR resources name systems by URL; the source of
truth stays the ANS IG, and ``tests/unit/test_dmp_conformance_valuesets.py`` checks the
extracts against the corpus copy when it is present.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

__all__ = ["ValueSet", "value_set", "TERMINOLOGY_DIR", "FILES"]

TERMINOLOGY_DIR = Path(__file__).resolve().parents[3] / "profiles" / "terminology"

FILES = {
    "J57": "jdv_j57_classcode_dmp.json",
    "J58": "jdv_j58_confidentiality_dmp.json",
    "J59": "jdv_j59_contenttype_dmp.json",
    "J60": "jdv_j60_formatcode_dmp.json",
    "J61": "jdv_j61_facilitytype_dmp.json",
    "J62": "jdv_j62_practicesetting_dmp.json",
    "J65": "jdv_j65_subjectrole_dmp.json",
    "J66": "jdv_j66_typecode_dmp.json",
}


class ValueSet:
    """Membership of (code, system) pairs; ``name`` is the ANS JDV id."""

    def __init__(self, name: str, pairs: set[tuple[str, str]], oid: str) -> None:
        self.name = name
        self.oid = oid
        self.pairs = frozenset(pairs)
        self.codes = frozenset(code for code, _ in pairs)

    def __contains__(self, pair: object) -> bool:
        return pair in self.pairs

    def systems_of(self, code: str) -> set[str]:
        """The code systems in which ``code`` is a member."""
        return {system for c, system in self.pairs if c == code}


@cache
def value_set(key: str) -> ValueSet:
    """The value set ``J57`` … ``J66`` (cached; the files are small)."""
    data = json.loads((TERMINOLOGY_DIR / FILES[key]).read_text(encoding="utf-8"))
    pairs = {(c["code"], c["system"]) for c in data["codes"]}
    return ValueSet(data.get("id", key), pairs, data.get("oid", ""))
