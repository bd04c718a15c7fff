"""HL7 v2 data types as XDS carries them (CX, XON, XCN) and the French identifiers inside.

References:
* IHE ITI TF-3 §4.2.3.1.7 (XDS data types CX, XON, XCN, DTM: components split on ``^``,
  sub-components on ``&``; DTM in UTC, ``YYYY[MM[DD[hh[mm[ss]]]]]``).
* INS: ANS "Référentiel INS" / domain.md §1 (15 characters, key = 97 − (N mod 97), Corsica
  2A→19, 2B→18); OIDs 1.2.250.1.213.1.4.8 (NIR), .9 (NIA), .10 (test), .11 (demo); XDS form
  ``INS^^^&OID&ISO^NH`` (ANS PDSM4DMP ``input/fsh/Model/PatientId.fsh``; VIHF example of the
  volet mapping page).
* Struct_IdNat: ANS PDSM4DMP ``input/fsh/Model/StructIdNat.fsh`` (0 + ADELI cabinet,
  1 + FINESS, 2 + SIREN, 3 + SIRET, 4 + RPPS-rang); IDNST XON:
  ``input/fsh/Model/AuthorInstitution.fsh`` (XON.6.2 = 1.2.250.1.71.4.2.2, XON.7 = IDNST,
  XON.10 = Struct_IdNat).
* Persons and systems: ``input/fsh/Model/ActorPS.fsh`` / ``ActorSystem.fsh`` (XCN.9.2 =
  1.2.250.1.71.4.2.1; a system has XCN.10 = ``U`` and XCN.13 = ``RI``).
"""

from __future__ import annotations

import re

__all__ = [
    "components",
    "sub",
    "ins_problem",
    "xon_problem",
    "xcn_kind",
    "dtm_problem",
    "INS_OIDS",
    "IDNST_OID",
    "PS_OID",
]

INS_OIDS = {"1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"}
IDNST_OID = "1.2.250.1.71.4.2.2"
PS_OID = "1.2.250.1.71.4.2.1"
_DTM = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2})?)?)?)?)?$")
_NIR = re.compile(r"^[1-478]\d{2}(0[1-9]|1[0-2]|[2-9]\d)(\d{2}|2A|2B)\d{6}\d{2}$")
_STRUCT_ID = {
    "0": re.compile(r"^0\d{9}$"),
    "1": re.compile(r"^1(\d{9}|2[AB]\d{7})$"),
    "2": re.compile(r"^2\d{9}$"),
    "3": re.compile(r"^3\d{14}$"),
    "4": re.compile(r"^4\d{11,}$"),
}


def components(value: str) -> list[str]:
    """The ``^``-separated components of an HL7 v2 value."""
    return value.split("^")


def sub(component: str) -> list[str]:
    """The ``&``-separated sub-components of a component."""
    return component.split("&")


def _at(parts: list[str], index: int) -> str:
    return parts[index] if len(parts) > index else ""


def ins_problem(cx: str) -> str | None:
    """Why ``cx`` is not an INS in XDS CX form, or None."""
    parts = components(cx)
    authority = sub(_at(parts, 3))
    if len(parts) != 5 or _at(parts, 1) or _at(parts, 2):
        return f"{cx!r} is not of the form INS^^^&OID&ISO^NH"
    if _at(parts, 4) != "NH":
        return f"identifier type {_at(parts, 4)!r}, XDS requires NH"
    if len(authority) != 3 or authority[0] or authority[2] != "ISO" or authority[1] not in INS_OIDS:
        return f"assigning authority {_at(parts, 3)!r} is not &<INS OID>&ISO"
    number = parts[0]
    if not _NIR.match(number):
        return "the INS matricule is not 15 characters of NIR/NIA layout"
    digits = number[:13].replace("2A", "19").replace("2B", "18")
    if 97 - int(digits) % 97 != int(number[13:]):
        return "the INS key does not check"
    return None


def struct_id_problem(value: str) -> str | None:
    """Why ``value`` is not a Struct_IdNat, or None."""
    pattern = _STRUCT_ID.get(value[:1])
    if pattern is None:
        return f"Struct_IdNat {value!r} does not start with 0, 1, 2, 3 or 4"
    if not pattern.match(value):
        return f"Struct_IdNat {value!r} has the wrong length or characters for prefix {value[0]}"
    return None


def xon_problem(xon: str) -> str | None:
    """Why ``xon`` is not an IDNST XON (Struct_IdNat in XON.10), or None."""
    parts = components(xon)
    if not _at(parts, 0):
        return "XON.1 (organisation name) is empty"
    authority = sub(_at(parts, 5))
    if len(authority) < 2 or authority[1] != IDNST_OID:
        return f"XON.6 {_at(parts, 5)!r} is not &{IDNST_OID}&ISO"
    if _at(parts, 6) != "IDNST":
        return f"XON.7 is {_at(parts, 6)!r}, expected IDNST"
    return struct_id_problem(_at(parts, 9))


def xon_id(xon: str) -> str:
    """XON.10, the organisation identifier."""
    return _at(components(xon), 9)


def xcn_kind(xcn: str) -> tuple[str, str | None]:
    """``("person"|"system", problem)`` for an authorPerson XCN."""
    parts = components(xcn)
    authority = sub(_at(parts, 8))
    if _at(parts, 9) == "U" or _at(parts, 12) == "RI":
        problems = []
        if not _at(parts, 0):
            problems.append("XCN.1 (system id) empty")
        if not _at(parts, 1):
            problems.append("XCN.2 (system name) empty")
        if _at(parts, 9) != "U" or _at(parts, 12) != "RI":
            problems.append("a system author has XCN.10 = U and XCN.13 = RI")
        if len(authority) < 2 or authority[1] != PS_OID:
            problems.append(f"XCN.9 is not &{PS_OID}&ISO")
        return "system", "; ".join(problems) or None
    if not _at(parts, 0):
        return "person", "XCN.1 (identifier) empty"
    if not _at(parts, 1):
        return "person", "a person author without XCN.2 family name (a system must be ActorSystem-shaped)"
    if len(authority) < 2 or not authority[1]:
        return "person", "XCN.9 assigning authority missing"
    if not _at(parts, 12):
        return "person", "XCN.13 identifier type missing"
    return "person", None


def xcn_id(xcn: str) -> str:
    """XCN.1, the person or system identifier."""
    return _at(components(xcn), 0)


def xcn_names(xcn: str) -> tuple[str, str]:
    """(XCN.2, XCN.3): family and given name, or system name and model."""
    parts = components(xcn)
    return _at(parts, 1), _at(parts, 2)


def dtm_problem(value: str) -> str | None:
    """Why ``value`` is not an XDS DTM (UTC, digits only), or None."""
    if _DTM.match(value):
        return None
    if re.search(r"[+-]\d{4}$|Z$", value):
        return f"{value!r} carries a time zone; XDS times are UTC without offset"
    return f"{value!r} is not YYYY[MM[DD[hh[mm[ss]]]]]"
