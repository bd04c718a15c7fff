"""Rebuild profiles/terminology/*.json from the ANS terminology IG (FHIR JSON).

Usage (from the repository root)::

    python tools/extract_terminology.py [--corpus ../shared/corpus] [--out profiles/terminology]

Input: ``<corpus>/terminology/ig-terminologie-de-sante/*.json`` (FHIR R4 ValueSets, ConceptMaps
and CodeSystems of ``ansforge/IG-terminologie-de-sante``, folder ``ig/main``) and
``<corpus>/MANIFEST.tsv`` for the source repository, path and commit of each file.

Output: compact JSON files that are *our* data from then on (they are committed; the gateway
never reads the corpus at run time). Each file records where it came from::

    {"id", "version", "oid", "source": {"repo", "path", "commit"},
     "codes": [{"code", "system", "display"}]}                          # value sets
    {"id", "version", "oid", "source", "map": {"<system>|<code>": {"code", "system", "display"}}}

``system`` is always an OID without ``urn:oid:`` (or the literal identifier the ANS gives a
code system that has no OID: ``URN`` for TRE_A10, ``ASTM`` for TRE_A12). The FHIR canonical
URLs are translated with ``SYSTEM_OIDS`` below; every OID there was read from the
``identifier`` of the code system in the ANS IG (see profiles/terminology/README.md).

Re-run after updating the corpus, review the diff, commit the JSON together with the corpus
commit it came from. The script is deterministic (sorted keys, stable order).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["SYSTEM_OIDS", "main"]

_NOS = "https://mos.esante.gouv.fr/NOS/"


def _nos(name: str) -> str:
    """Canonical URL of an ANS NOS code system: ``TRE_A03-X`` -> ``…/NOS/TRE_A03-X/FHIR/TRE-A03-X``."""
    return f"{_NOS}{name}/FHIR/{name.replace('_', '-', 1)}"


#: FHIR canonical URL of a code system -> OID used in CDA / XDS. Read from each CodeSystem's
#: ``identifier`` (urn:oid:...) in ansforge/IG-terminologie-de-sante; LOINC is HL7's OID.
SYSTEM_OIDS: dict[str, str] = {
    "http://loinc.org": "2.16.840.1.113883.6.1",
    _nos("TRE_A00-ProducteurDocNonPS"): "1.2.250.1.213.1.1.4.6",
    _nos("TRE_A01-CadreExercice"): "1.2.250.1.213.1.1.4.9",
    _nos("TRE_A03-ClasseDocument"): "1.2.250.1.213.1.1.4.1",
    _nos("TRE_A05-TypeDocComplementaire"): "1.2.250.1.213.1.1.4.12",
    _nos("TRE_A06-FormatCodeComplementaire"): "1.2.250.1.213.1.1.4.2.282",
    _nos("TRE_A07-StatutVisibiliteDocument"): "1.2.250.1.213.1.1.4.13",
    _nos("TRE_A08-HL7Confidentiality"): "2.16.840.1.113883.5.25",
    _nos("TRE_A09-DICOMuidRegistry"): "1.2.840.10008.2.6.1",
    _nos("TRE_A10-NomenclatureURN"): "URN",
    _nos("TRE_A11-IheFormatCode"): "1.3.6.1.4.1.19376.1.2.3",
    _nos("TRE_A12-NomenclatureASTM"): "ASTM",
    _nos("TRE_R02-SecteurActivite"): "1.2.250.1.71.4.2.4",
    _nos("TRE_R209-TypeActivite"): "1.2.250.1.213.2.2",
    _nos("TRE_R276-FormeActivite"): "1.2.250.1.213.1.6.1.128",
    # J65 (VIHF subject role)
    _nos("TRE_G15-ProfessionSante"): "1.2.250.1.71.1.2.7",
    _nos("TRE_G16-ProfessionFormation"): "1.2.250.1.71.1.2.8",
    _nos("TRE_G05-SousSectionTableauCNOP"): "1.2.250.1.71.4.2.6",
    _nos("TRE_R01-EnsembleSavoirFaire-CISIS"): "1.2.250.1.71.4.2.5",
    _nos("TRE_R21-Fonction"): "1.2.250.1.213.1.6.1.17",
    _nos("TRE_R22-GenreActivite"): "1.2.250.1.213.1.6.1.19",
    _nos("TRE_R85-RolePriseCharge"): "1.2.250.1.213.1.6.1.107",
    _nos("TRE_R94-ProfessionSocial"): "1.2.250.1.213.1.6.1.4",
    _nos("TRE_R95-UsagerTitre"): "1.2.250.1.213.1.6.1.109",
    _nos("TRE_R291-AutreProfession"): "1.2.250.1.213.1.6.1.140",
}

_IG_DIR = "terminology/ig-terminologie-de-sante"

#: output name -> (input file, kind)
_VALUE_SETS = {
    "jdv_j57_classcode_dmp": "ValueSet-JDV-J57-ClassCode-DMP.json",
    "jdv_j58_confidentiality_dmp": "ValueSet-JDV-J58-ConfidentialityCode-DMP.json",
    "jdv_j59_contenttype_dmp": "ValueSet-JDV-J59-ContentTypeCode-DMP.json",
    "jdv_j60_formatcode_dmp": "ValueSet-JDV-J60-FormatCode-DMP.json",
    "jdv_j61_facilitytype_dmp": "ValueSet-JDV-J61-HealthcareFacilityTypeCode-DMP.json",
    "jdv_j62_practicesetting_dmp": "ValueSet-JDV-J62-PracticeSettingCode-DMP.json",
    "jdv_j65_subjectrole_dmp": "ValueSet-JDV-J65-SubjectRole-DMP.json",
    "jdv_j66_typecode_dmp": "ValueSet-JDV-J66-TypeCode-DMP.json",
}
_TYPE_CLASS_MAPS = {
    "ass_x16_type_class_dmp": "ConceptMap-ASS-X16-CorrespondanceType-Classe-DMP.json",
    "ass_x04_type_class_cisis": "ConceptMap-ASS-X04-CorrespondanceType-Classe-CISIS.json",
}
_A11 = ("ass_a11_cda_model_format", "ConceptMap-ASS-A11-CorresModeleCDA-XdsFormatCode-CISIS.json")
_CLASS_CODESYSTEM = "CodeSystem-TRE-A03-ClasseDocument.json"

#: A11 gives one line per embedded format of an XDS-SD (level 1) document, told apart only by
#: a French comment; this is the media type each comment names (CDA nonXMLBody/text@mediaType).
_A11_NONXML_MEDIA = {
    "pdf": "application/pdf",
    "texte": "text/plain",
    "jpeg": "image/jpeg",
    "rtf": "text/rtf",
    "tiff": "image/tiff",
}

#: CDA models whose formatCode JDV_J60 lists but the ASS_A11 release in the corpus does not map
#: yet (A11 5.0.0 predates them). Each templateId is the one the ANS example of that model
#: declares (ansforge/TestContenuCDA-3-0, ExemplesCDA); each code must be in J60 and absent
#: from A11, which the extraction checks, so the supplement disappears by itself once A11
#: catches up. J60 codes with no known templateId (dlu:2024, fr-su:2024, ft-su:2024) are
#: not guessed: such documents keep XDS_FORMAT_UNKNOWN.
_A11_SUPPLEMENT = {
    # BIO-TROD_2024.01_COVID-19.xml: Test rapide d'orientation diagnostique
    "1.2.250.1.213.1.1.1.59": ("1.2.250.1.213.1.1.4.2.282", "urn:ans:ci-sis:trod:2024"),
}

#: Keep the J65 extract only if it stays small (brief: "< 100 KB").
_J65_MAX_BYTES = 100_000


def _oid(system: str) -> str:
    try:
        return SYSTEM_OIDS[system]
    except KeyError:
        raise SystemExit(f"no OID known for code system {system!r}: add it to SYSTEM_OIDS") from None


def _identifier_oid(resource: dict[str, Any]) -> str | None:
    ident = resource.get("identifier")
    items = ident if isinstance(ident, list) else [ident] if ident else []
    for item in items:
        value = item.get("value", "")
        if value.startswith("urn:oid:"):
            return value[len("urn:oid:") :]
    return None


def _read_manifest(corpus: Path) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    with (corpus / "MANIFEST.tsv").open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            out[row["path_in_corpus"]] = {
                "repo": row["source_repo"],
                "path": row["path_in_source_repo"],
                "commit": row["commit"],
            }
    return out


def _load(corpus: Path, name: str) -> dict[str, Any]:
    with (corpus / _IG_DIR / name).open(encoding="utf-8") as fh:
        return json.load(fh)


def _header(resource: dict[str, Any], source: dict[str, str]) -> dict[str, Any]:
    return {
        "id": resource["id"],
        "version": resource.get("version"),
        "oid": _identifier_oid(resource),
        "source": source,
    }


def _value_set(resource: dict[str, Any], source: dict[str, str]) -> dict[str, Any]:
    codes = []
    for include in resource.get("compose", {}).get("include", []):
        if "concept" not in include:
            raise SystemExit(f"{resource['id']}: include without an explicit concept list is not supported")
        system = _oid(include["system"])
        for concept in include["concept"]:
            codes.append({"code": concept["code"], "system": system, "display": concept.get("display", "")})
    return {**_header(resource, source), "codes": codes}


def _type_class_map(
    resource: dict[str, Any], source: dict[str, str], class_display: dict[tuple[str, str], str]
) -> dict[str, Any]:
    mapping: dict[str, dict[str, str]] = {}
    for group in resource["group"]:
        src, tgt = _oid(group["source"]), _oid(group["target"])
        for element in group["element"]:
            target = element["target"][0]
            mapping[f"{src}|{element['code']}"] = {
                "code": target["code"],
                "system": tgt,
                "display": target.get("display") or class_display.get((tgt, target["code"]), ""),
            }
    return {**_header(resource, source), "map": mapping}


def _a11_map(
    resource: dict[str, Any], source: dict[str, str], format_display: dict[tuple[str, str], str]
) -> dict[str, Any]:
    """A11 keyed by CDA templateId (level 3); level-1 (XDS-SD) lines keyed by media type."""
    by_template: dict[str, dict[str, str]] = {}
    nonxml: dict[str, dict[str, str]] = {}
    for group in resource["group"]:
        tgt = _oid(group["target"])
        structured = "NonStructure" not in group["source"]
        for element in group["element"]:
            target = element["target"][0]
            value = {
                "code": target["code"],
                "system": tgt,
                "display": format_display.get((tgt, target["code"]), ""),
            }
            if structured:
                by_template[element["code"]] = value
                continue
            comment = target.get("comment", "").lower()
            media = next((m for key, m in _A11_NONXML_MEDIA.items() if f" {key} " in f" {comment} "), None)
            if media is None:
                raise SystemExit(f"A11: cannot tell the media type of {target['code']!r} ({comment!r})")
            nonxml[media] = value
    return {**_header(resource, source), "map": by_template, "nonxml": nonxml}


def _a11_supplement(j60: dict[str, Any], out_dir: Path, a11_name: str) -> dict[str, Any]:
    """The A11 lines J60 calls for and A11 lacks, checked against both tables."""
    a11 = json.loads((out_dir / f"{a11_name}.json").read_text(encoding="utf-8"))
    mapped = {(v["system"], v["code"]) for v in [*a11["map"].values(), *a11["nonxml"].values()]}
    j60_display = {(c["system"], c["code"]): c["display"] for c in j60["codes"]}
    lines: dict[str, dict[str, str]] = {}
    for template_id, (system, code) in _A11_SUPPLEMENT.items():
        if (system, code) not in j60_display:
            raise SystemExit(f"A11 supplement: {code} is not in JDV_J60")
        if (system, code) in mapped or template_id in a11["map"]:
            continue  # A11 has it now: the supplement line is no longer needed
        lines[template_id] = {"code": code, "system": system, "display": j60_display[(system, code)]}
    return {
        "id": "ASS-A11-supplement-from-JDV-J60",
        "version": j60["version"],
        "oid": None,
        "source": j60["source"],
        "map": lines,
        "j60_not_in_a11": sorted(
            code for (system, code) in j60_display if (system, code) not in mapped
            and not any(v["code"] == code for v in lines.values())
        ),
    }


def _write(out_dir: Path, name: str, data: dict[str, Any]) -> int:
    text = json.dumps(data, ensure_ascii=False, indent=1, sort_keys=False) + "\n"
    path = out_dir / f"{name}.json"
    path.write_text(text, encoding="utf-8")
    return len(text.encode("utf-8"))


def main(argv: list[str] | None = None) -> int:
    """Regenerate the terminology JSON files; returns a process exit code."""
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=root.parent / "shared" / "corpus")
    parser.add_argument("--out", type=Path, default=root / "profiles" / "terminology")
    args = parser.parse_args(argv)
    corpus: Path = args.corpus
    out_dir: Path = args.out
    if not (corpus / _IG_DIR).is_dir():
        print(f"corpus not found: {corpus / _IG_DIR}", file=sys.stderr)
        return 2
    manifest = _read_manifest(corpus)

    def source(name: str) -> dict[str, str]:
        return manifest[f"{_IG_DIR}/{name}"]

    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    value_sets: dict[str, dict[str, Any]] = {}
    for out_name, in_name in _VALUE_SETS.items():
        value_sets[out_name] = _value_set(_load(corpus, in_name), source(in_name))

    class_display = {
        (c["system"], c["code"]): c["display"] for c in value_sets["jdv_j57_classcode_dmp"]["codes"]
    }
    a03 = _load(corpus, _CLASS_CODESYSTEM)
    for concept in a03["concept"]:
        class_display.setdefault((_identifier_oid(a03) or "", concept["code"]), concept.get("display", ""))
    format_display = {
        (c["system"], c["code"]): c["display"] for c in value_sets["jdv_j60_formatcode_dmp"]["codes"]
    }

    for out_name, data in value_sets.items():
        text_size = len(json.dumps(data, ensure_ascii=False, indent=1).encode("utf-8"))
        if out_name == "jdv_j65_subjectrole_dmp" and text_size > _J65_MAX_BYTES:
            print(f"skipping {out_name}: {text_size} bytes > {_J65_MAX_BYTES}", file=sys.stderr)
            continue
        written[out_name] = _write(out_dir, out_name, data)
    for out_name, in_name in _TYPE_CLASS_MAPS.items():
        written[out_name] = _write(
            out_dir, out_name, _type_class_map(_load(corpus, in_name), source(in_name), class_display)
        )
    a11_name, a11_file = _A11
    written[a11_name] = _write(
        out_dir, a11_name, _a11_map(_load(corpus, a11_file), source(a11_file), format_display)
    )
    written["ass_a11_supplement_j60"] = _write(
        out_dir, "ass_a11_supplement_j60", _a11_supplement(value_sets["jdv_j60_formatcode_dmp"], out_dir, a11_name)
    )
    for name, size in sorted(written.items()):
        print(f"{name}.json\t{size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
