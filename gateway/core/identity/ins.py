"""INS matricule rules: length, format, key, sex and month digits, birth data, OID.

Pure functions, no I/O. ``validate_ins`` returns every finding it can establish
rather than stopping at the first one, so an ACK ERR or ``relais ins`` can tell the
sender everything that is wrong at once. It only stops early when the string is not
15 characters or not in the INS alphabet, because positions are meaningless then.

Sources (see docs/domain.md §1 and §8): CNAM ``NirKey.php`` for the key and the
Corsica substitution, CNAM ``NirValidator`` for the month ranges, the IHE France
APN table for the OIDs, PAM 2.11.2 §6.6.1 for the billing NIR (CX.5 ``NH``).

Findings carry ``location=None``: the caller knows whether the number came from
PID-3, a CDA ``patientRole/id`` or the command line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from gateway.model import Finding

__all__ = [
    "InsCode",
    "InsVerdict",
    "OID_INS_NIR",
    "OID_INS_NIA",
    "OID_INS_NIR_TEST",
    "OID_INS_NIR_DEMO",
    "INS_KINDS",
    "TEST_KINDS",
    "compute_key",
    "validate_ins",
]


class InsCode(StrEnum):
    """Stable codes for INS and identity findings (ACK ERR, journal, API, CLI)."""

    INS_LENGTH = "INS_LENGTH"
    INS_FORMAT = "INS_FORMAT"
    INS_KEY = "INS_KEY"
    INS_SEX_DIGIT = "INS_SEX_DIGIT"
    INS_MONTH = "INS_MONTH"
    INS_SEX_MISMATCH = "INS_SEX_MISMATCH"
    INS_BIRTH_YEAR_MISMATCH = "INS_BIRTH_YEAR_MISMATCH"
    INS_BIRTH_MONTH_MISMATCH = "INS_BIRTH_MONTH_MISMATCH"
    INS_OID_UNKNOWN = "INS_OID_UNKNOWN"
    INS_OID_TEST = "INS_OID_TEST"
    INS_NOT_QUALIFIED = "INS_NOT_QUALIFIED"
    INS_TRAITS_MISMATCH = "INS_TRAITS_MISMATCH"
    INS_CONFLICT = "INS_CONFLICT"


OID_INS_NIR = "1.2.250.1.213.1.4.8"
OID_INS_NIA = "1.2.250.1.213.1.4.9"
OID_INS_NIR_TEST = "1.2.250.1.213.1.4.10"
OID_INS_NIR_DEMO = "1.2.250.1.213.1.4.11"

# The OID, not the digits, tells a NIR from a NIA (a NIA is laid out like a NIR).
INS_KINDS: dict[str, str] = {
    OID_INS_NIR: "INS-NIR",
    OID_INS_NIA: "INS-NIA",
    OID_INS_NIR_TEST: "INS-NIR-TEST",
    OID_INS_NIR_DEMO: "INS-NIR-DEMO",
}
TEST_KINDS = frozenset({"INS-NIR-TEST", "INS-NIR-DEMO"})

# OIDs people mistake for the INS one; named in the message so the sender can fix it.
_KNOWN_WRONG_OIDS = {
    "1.2.250.1.213.1.4.2": "an INS-C (obsolete calculated identifier), not an INS",
    "1.2.250.1.213.1.4.6": "an INS-C of test cards (obsolete), not an INS",
    "1.2.250.1.213.1.4.7": "an INS-C of demo cards (obsolete), not an INS",
    "1.2.250.1.213.1.4.5": "not an INS assigning authority (absent from the IHE France table)",
}

# Corsica: 2A/2B only in the département positions (6-7); every other position is a digit.
_FORMAT = re.compile(r"[0-9]{5}(?:[0-9]{2}|2A|2B)[0-9]{8}")
# For the key, 2A and 2B are read as 19 and 18 (CNAM NirKey.php, python-stdnum).
_CORSICA = {"2A": "19", "2B": "18"}

_SEX_OK = frozenset("12")
# 3/4/7/8 appear in foreigners' provisional numbers and the withdrawn NNP; tolerated
# with a warning when the key checks out (domain.md §1), since INSi is the authority.
_SEX_TOLERATED = frozenset("3478")
# Odd = man, even = woman, for the tolerated digits as for 1/2.
_SEX_OF_DIGIT = {"1": "M", "3": "M", "7": "M", "2": "F", "4": "F", "8": "F"}
_ADMIN_SEX = {"M": "M", "MALE": "M", "F": "F", "FEMALE": "F"}


@dataclass(frozen=True, slots=True)
class InsVerdict:
    """Outcome of ``validate_ins``: ``valid`` is true exactly when there is no error.

    ``kind`` is ``INS-NIR``, ``INS-NIA``, ``INS-NIR-TEST`` or ``INS-NIR-DEMO`` when an
    OID was given and recognised (even if the number itself is wrong), else ``None``.
    """

    valid: bool
    kind: str | None
    errors: tuple[Finding, ...] = ()
    warnings: tuple[Finding, ...] = ()

    @property
    def error_codes(self) -> tuple[str, ...]:
        return tuple(f.code for f in self.errors)

    @property
    def warning_codes(self) -> tuple[str, ...]:
        return tuple(f.code for f in self.warnings)

    def as_dict(self) -> dict[str, object]:
        """JSON shape used by ``relais ins --json`` and the API."""
        return {
            "valid": self.valid,
            "kind": self.kind,
            "errors": list(self.error_codes),
            "warnings": list(self.warning_codes),
        }


def compute_key(base13: str) -> str:
    """Return the 2-digit key of a 13-character NIR/NIA base: ``97 - (N mod 97)``.

    ``2A``/``2B`` in positions 6-7 are replaced by ``19``/``18`` first. The result is
    always in ``01``-``97``. Raises ``ValueError`` when ``base13`` is not 13 characters
    in the INS alphabet.
    """
    if len(base13) != 13 or not _FORMAT.fullmatch(base13 + "00"):
        raise ValueError("an INS base is 13 digits, with 2A or 2B allowed at positions 6-7")
    digits = base13[:5] + _CORSICA.get(base13[5:7], base13[5:7]) + base13[7:]
    return f"{97 - int(digits) % 97:02d}"


def _err(code: InsCode, message: str) -> Finding:
    return Finding(code=code.value, message=message, location=None, severity="error")


def _warn(code: InsCode, message: str) -> Finding:
    return Finding(code=code.value, message=message, location=None, severity="warning")


def _check_oid(oid: str | None, type_code: str | None, allow_test: bool) -> tuple[str | None, list[Finding]]:
    """Kind from the assigning authority, and the OID / type findings."""
    errors: list[Finding] = []
    kind: str | None = None
    billing = type_code is not None and type_code.strip().upper() == "NH"
    if billing:
        # PAM §6.6.1: CX.5 = NH in PID-3 is the billing NIR (often a parent's), not an INS.
        errors.append(
            _err(
                InsCode.INS_OID_UNKNOWN,
                "identifier type NH is a billing NIR (numéro de sécurité sociale), not an INS; "
                "an INS in PID-3 has type INS",
            )
        )
    if oid is None:
        return kind, errors
    bare = oid.strip()
    if bare.lower().startswith("urn:oid:"):
        bare = bare[len("urn:oid:") :]
    kind = INS_KINDS.get(bare)
    if billing:
        # The same OID (…4.8) also names the billing NIR; the type decides, and it is not an INS.
        return None, errors
    if kind is None:
        why = _KNOWN_WRONG_OIDS.get(bare, "not an INS assigning authority")
        errors.append(
            _err(
                InsCode.INS_OID_UNKNOWN,
                f"assigning authority {bare or '(empty)'} is {why}; expected "
                f"{OID_INS_NIR} (INS-NIR) or {OID_INS_NIA} (INS-NIA)",
            )
        )
    elif kind in TEST_KINDS and not allow_test:
        errors.append(
            _err(
                InsCode.INS_OID_TEST,
                f"assigning authority {bare} is reserved for {kind} patients and is refused in production",
            )
        )
    return kind, errors


def _birth_parts(birth_date: str | None) -> tuple[str | None, str | None]:
    """(YYYY, MM) from ``YYYYMMDD``, ``YYYY-MM-DD`` or a prefix of either; None when unknown."""
    if not birth_date:
        return None, None
    compact = birth_date.strip().replace("-", "")
    year = compact[:4] if len(compact) >= 4 and compact[:4].isdigit() else None
    month = compact[4:6] if year and len(compact) >= 6 and compact[4:6].isdigit() else None
    if month is not None and not 1 <= int(month) <= 12:
        month = None
    return year, month


def validate_ins(
    number: str,
    *,
    oid: str | None = None,
    type_code: str | None = None,
    sex: str | None = None,
    birth_date: str | None = None,
    allow_test: bool = False,
) -> InsVerdict:
    """Check an INS matricule (15 characters, key included) and, when given, its context.

    ``oid`` is the assigning authority (CX.4.2, II@root or a FHIR system; ``urn:oid:``
    is accepted), ``type_code`` the v2 CX.5, ``sex`` the administrative sex (M/F;
    anything else is not compared) and ``birth_date`` ``YYYYMMDD`` or ``YYYY-MM-DD``,
    possibly partial. Test and demo OIDs are refused unless ``allow_test``.
    """
    kind, oid_errors = _check_oid(oid, type_code, allow_test)
    errors: list[Finding] = []
    warnings: list[Finding] = []

    if len(number) != 15:
        errors.append(
            _err(InsCode.INS_LENGTH, f"an INS has 15 characters (13 + a 2-digit key), got {len(number)}")
        )
        return _verdict(kind, errors + oid_errors, warnings)
    if not _FORMAT.fullmatch(number):
        errors.append(
            _err(
                InsCode.INS_FORMAT,
                "an INS is made of digits, with 2A or 2B allowed only at positions 6-7 (Corsica)",
            )
        )
        return _verdict(kind, errors + oid_errors, warnings)

    key_ok = compute_key(number[:13]) == number[13:]
    if not key_ok:
        errors.append(_err(InsCode.INS_KEY, "the control key (last 2 digits) does not match the number"))

    sex_digit = number[0]
    if sex_digit in _SEX_TOLERATED and key_ok:
        warnings.append(
            _warn(
                InsCode.INS_SEX_DIGIT,
                f"sex digit {sex_digit} is unusual for an INS (expected 1 or 2); accepted as the key is valid",
            )
        )
    elif sex_digit not in _SEX_OK:
        # 3/4/7/8 with a wrong key get no benefit of the doubt.
        errors.append(_err(InsCode.INS_SEX_DIGIT, f"sex digit {sex_digit} is invalid (expected 1 or 2)"))

    month = int(number[3:5])
    month_known = 1 <= month <= 12
    # 20-99: month unknown (people born abroad, CNAM/INSEE); 00 and 13-19 never occur.
    if not month_known and month < 20:
        errors.append(
            _err(InsCode.INS_MONTH, f"birth month {number[3:5]} is invalid (01-12, or 20-99 when unknown)")
        )

    birth_year, birth_month = _birth_parts(birth_date)
    if birth_year is not None and birth_year[2:] != number[1:3]:
        errors.append(
            _err(InsCode.INS_BIRTH_YEAR_MISMATCH, "the birth year in the INS does not match the birth date")
        )
    if month_known and birth_month is not None and birth_month != number[3:5]:
        errors.append(
            _err(InsCode.INS_BIRTH_MONTH_MISMATCH, "the birth month in the INS does not match the birth date")
        )

    admin_sex = _ADMIN_SEX.get((sex or "").strip().upper())
    digit_sex = _SEX_OF_DIGIT.get(sex_digit)
    if admin_sex is not None and digit_sex is not None and admin_sex != digit_sex:
        errors.append(
            _err(
                InsCode.INS_SEX_MISMATCH,
                "the sex digit of the INS does not match the administrative sex",
            )
        )

    return _verdict(kind, errors + oid_errors, warnings)


def _verdict(kind: str | None, errors: list[Finding], warnings: list[Finding]) -> InsVerdict:
    return InsVerdict(valid=not errors, kind=kind, errors=tuple(errors), warnings=tuple(warnings))
