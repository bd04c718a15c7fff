"""DMP terminology lookups: JDV value sets, type→class (X16/X04), CDA model→format (A11).

The data are compact JSON extracts committed under ``profiles/terminology`` (see the README
there and ``tools/extract_terminology.py``). Files are read once through ``importlib.resources``
and cached; every lookup afterwards is a dict access.

Names: a file name without ``.json`` (``jdv_j66_typecode_dmp``) or its unique prefix, case and
dashes ignored (``JDV_J66``, ``jdv-j66``, ``ASS_X16``).

Coded values returned are ``CodedValue`` dicts ``{"code", "codeSystem", "displayName"}``
(``codeSystem`` an OID without ``urn:oid:``), ready for XDS metadata.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any

from gateway.model import CodedValue

__all__ = [
    "LOINC",
    "TRE_A07",
    "HL7_CONFIDENTIALITY",
    "load",
    "names",
    "in_value_set",
    "display",
    "coded",
    "class_for_type",
    "format_for_templates",
    "content_type_for_patient_class",
]

LOINC = "2.16.840.1.113883.6.1"
TRE_A07 = "1.2.250.1.213.1.1.4.13"
HL7_CONFIDENTIALITY = "2.16.840.1.113883.5.25"

_PACKAGE = "profiles.terminology"

#: PV1-2 patient class -> JDV_J59 content type code (TRE_R209), per the HL7 v2 CDA volet
#: (V2 mapping.md): I→03, O→07, R→19, N→97, E→07. Anything else, including a missing PV1-2,
#: gets 97 "Type d'activité indifférencié": we would rather say "unknown" than guess
#: "consultation" for a document whose encounter we know nothing about.
_PATIENT_CLASS_CONTENT_TYPE = {"I": "03", "O": "07", "R": "19", "N": "97", "E": "07"}
_CONTENT_TYPE_DEFAULT = "97"

#: A11 media type used when a level-1 document does not say (CDA ED default is text/plain,
#: but the DMP level-1 profile is PDF/A; the caller passes the real media type when known).
_NONXML_DEFAULT_MEDIA = "application/pdf"


@cache
def names() -> tuple[str, ...]:
    """The terminology files available (names without ``.json``)."""
    root = resources.files(_PACKAGE)
    return tuple(sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".json")))


@cache
def _resolve(name: str) -> str:
    key = name.lower().replace("-", "_").removesuffix(".json")
    available = names()
    if key in available:
        return key
    matches = [n for n in available if n.startswith(key + "_")]
    if len(matches) != 1:
        raise KeyError(f"unknown terminology {name!r} (known: {', '.join(available)})")
    return matches[0]


def load(name: str) -> dict[str, Any]:
    """The parsed JSON of one terminology file (cached; do not mutate the result)."""
    return _load(_resolve(name))


@cache
def _load(resolved: str) -> dict[str, Any]:
    text = resources.files(_PACKAGE).joinpath(f"{resolved}.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@cache
def _index(name: str) -> tuple[dict[tuple[str, str], str], dict[str, tuple[str, ...]]]:
    """(system, code) -> display, and code -> systems, for one value set."""
    by_pair: dict[tuple[str, str], str] = {}
    by_code: dict[str, list[str]] = {}
    for concept in load(name)["codes"]:
        by_pair[(concept["system"], concept["code"])] = concept["display"]
        by_code.setdefault(concept["code"], []).append(concept["system"])
    return by_pair, {code: tuple(systems) for code, systems in by_code.items()}


def _strip_urn(system: str | None) -> str | None:
    return system[len("urn:oid:") :] if system and system.startswith("urn:oid:") else system


def in_value_set(vs: str, code: str | None, system: str | None = None) -> bool:
    """Whether ``code`` (in ``system``, when given) belongs to value set ``vs``."""
    if not code:
        return False
    by_pair, by_code = _index(_resolve(vs))
    system = _strip_urn(system)
    if system is None:
        return code in by_code
    return (system, code) in by_pair


def _lookup(vs: str, code: str | None, system: str | None) -> tuple[str, str] | None:
    """(system, display) of ``code`` in ``vs``; the first system holding it when none is given."""
    if not code:
        return None
    by_pair, by_code = _index(_resolve(vs))
    system = _strip_urn(system)
    if system is None:
        systems = by_code.get(code)
        if not systems:
            return None
        system = systems[0]
    label = by_pair.get((system, code))
    return (system, label) if label is not None else None


def display(vs: str, code: str | None, system: str | None = None) -> str | None:
    """The value set's display for ``code`` (first system holding it when none is given)."""
    found = _lookup(vs, code, system)
    return found[1] if found else None


def coded(vs: str, code: str | None, system: str | None = None) -> CodedValue | None:
    """``code`` as a CodedValue with the value set's system and display, or None if absent."""
    found = _lookup(vs, code, system)
    if found is None or not code:
        return None
    return {"code": code, "codeSystem": found[0], "displayName": found[1]}


def _as_coded(entry: dict[str, str] | None) -> CodedValue | None:
    if entry is None:
        return None
    return {"code": entry["code"], "codeSystem": entry["system"], "displayName": entry["display"]}


def class_for_type(type_code: str | None, system: str | None = LOINC) -> CodedValue | None:
    """classCode for a typeCode: ASS_X16 (DMP) first, then ASS_X04 (CI-SIS)."""
    if not type_code:
        return None
    key = f"{_strip_urn(system) or LOINC}|{type_code}"
    for table in ("ass_x16_type_class_dmp", "ass_x04_type_class_cisis"):
        found = load(table)["map"].get(key)
        if found is not None:
            return _as_coded(found)
    return None


def format_for_templates(
    template_ids: Iterable[str], level: int, media_type: str | None = None
) -> CodedValue | None:
    """formatCode from ASS_A11.

    Level 1 (nonXMLBody): chosen by ``media_type`` (``application/pdf`` →
    ``urn:ihe:iti:xds-sd:pdf:2008``, ``text/plain`` → ``urn:ihe:iti:xds-sd:text:2008`` ...);
    no media type means PDF. Level 3: the first templateId found in A11, ANS templates
    (``1.2.250.1.213.…``) before IHE ones, because a document declares both a generic IHE
    profile and the specific ANS model and the ANS model is the precise one. Models that
    JDV_J60 lists but the A11 release lacks (BIO-TROD 2024, templateId
    1.2.250.1.213.1.1.1.59 → ``urn:ans:ci-sis:trod:2024``) come from
    ``ass_a11_supplement_j60``, which tools/extract_terminology.py builds and checks.
    """
    a11 = load("ass_a11_cda_model_format")
    supplement = load("ass_a11_supplement_j60")["map"]
    if level == 1:
        media = (media_type or _NONXML_DEFAULT_MEDIA).split(";")[0].strip().lower()
        return _as_coded(a11["nonxml"].get(media))
    ids = list(template_ids)
    ordered = [t for t in ids if t.startswith("1.2.250.1.213.")] + [
        t for t in ids if not t.startswith("1.2.250.1.213.")
    ]
    for template_id in ordered:
        found = a11["map"].get(template_id) or supplement.get(template_id)
        if found is not None:
            return _as_coded(found)
    return None


def content_type_for_patient_class(patient_class: str | None) -> CodedValue:
    """Submission set contentTypeCode (JDV_J59) from PV1-2; unknown or missing → 97."""
    code = _PATIENT_CLASS_CONTENT_TYPE.get((patient_class or "").strip().upper(), _CONTENT_TYPE_DEFAULT)
    value = coded("jdv_j59_contenttype_dmp", code, "1.2.250.1.213.2.2")
    if value is None:  # pragma: no cover - the committed J59 holds all five codes
        raise LookupError(f"JDV_J59 lacks content type {code}")
    return value
