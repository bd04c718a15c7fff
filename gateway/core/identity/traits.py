"""INS traits: normalisation for comparison, and strict-trait differences.

INSi traits are stored exactly as received and never altered (PAM §6.6.2/§6.6.4).
``normalise_trait`` exists only to *compare* two spellings of the same trait (a CDA
with accents against a PID in capitals); its result must never be stored or sent.
Hyphens and apostrophes are kept: INSi keeps hyphens (``MARIE-LOUISE``), and the
2013 rule that removed them predates the INS (domain.md §1).
"""

from __future__ import annotations

import unicodedata

from gateway.model import PatientIdentity

__all__ = ["STRICT_TRAITS", "normalise_trait", "strict_traits_differ"]

STRICT_TRAITS: tuple[str, ...] = (
    "birth_family",
    "first_given",
    "birth_given_list",
    "gender",
    "birth_date",
    "birthplace_cog",
)

# Ligatures do not decompose under NFD, so they are spelt out explicitly.
_LIGATURES = str.maketrans({"Œ": "OE", "œ": "OE", "Æ": "AE", "æ": "AE", "ß": "SS", "ẞ": "SS"})
_NAME_TRAITS = frozenset({"birth_family", "first_given", "birth_given_list"})


def normalise_trait(s: str | None) -> str:
    """Comparison key for a name trait: no diacritics, upper case, single spaces.

    ``None`` gives ``""``. Hyphens and apostrophes are left as they are.
    """
    if not s:
        return ""
    decomposed = unicodedata.normalize("NFD", s.translate(_LIGATURES))
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.upper().split())


def _date_key(value: str) -> str:
    return value.strip().replace("-", "")


def _present(value: str | None, trait: str) -> bool:
    if value is None or not value.strip():
        return False
    # U (unknown) is the absence of a sex, not a value that can contradict M or F.
    return not (trait == "gender" and value.strip().upper() == "U")


def strict_traits_differ(a: PatientIdentity, b: PatientIdentity) -> list[str]:
    """Names of the strict traits that both identities carry and that differ.

    Names are compared after ``normalise_trait``; sex and birthplace COG ignoring case
    and surrounding spaces; birth dates (``YYYYMMDD`` or ``YYYY-MM-DD``) on their
    common prefix, so a partial date does not contradict a full one. A trait missing
    on either side (or a sex of ``U``) is not a difference.
    """
    differ: list[str] = []
    for trait in STRICT_TRAITS:
        va: str | None = getattr(a, trait)
        vb: str | None = getattr(b, trait)
        if not (_present(va, trait) and _present(vb, trait)):
            continue
        assert va is not None and vb is not None  # narrowed by _present
        if trait in _NAME_TRAITS:
            same = normalise_trait(va) == normalise_trait(vb)
        elif trait == "birth_date":
            da, db = _date_key(va), _date_key(vb)
            n = min(len(da), len(db))
            same = da[:n] == db[:n]
        else:
            same = va.strip().upper() == vb.strip().upper()
        if not same:
            differ.append(trait)
    return differ
