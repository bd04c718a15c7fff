"""The checker shares no code with the client, and its data agree with the ANS sources."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from lxml import etree

from adapters.dmp.conformance.assertion import ATTR, read_vihf
from adapters.dmp.conformance.valuesets import FILES, value_set

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "corpus"
FORBIDDEN = (
    "adapters.dmp.client",
    "adapters.dmp.soap",
    "adapters.dmp.ebrim",
    "adapters.dmp.mtom",
    "adapters.dmp.vihf",
    "adapters.dmp.xades",  # the client's signer (the checker has its own verifier in conformance/)
    "gateway.core.xds",
    "gateway.core.fhir",
    "gateway.core.terminology",
)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize(
    "path",
    [*sorted((ROOT / "adapters" / "dmp" / "conformance").glob("*.py")), ROOT / "adapters" / "dmp" / "simulator.py",
     ROOT / "tests" / "dmp_request_builder.py"],
    ids=lambda p: p.name,
)
def test_no_import_from_the_client(path: Path) -> None:
    imported = _imports(path)
    shared = [name for name in imported for forbidden in FORBIDDEN if name == forbidden or name.startswith(forbidden + ".")]
    assert shared == [], f"{path.name} imports {shared}"


_SYSTEM_OIDS = {  # FHIR CodeSystem URL tail -> OID, as written on the wire (ANS terminology IG identifiers)
    "TRE-A00-ProducteurDocNonPS": "1.2.250.1.213.1.1.4.6",
    "TRE-G15-ProfessionSante": "1.2.250.1.71.1.2.7",
    "TRE-G16-ProfessionFormation": "1.2.250.1.71.1.2.8",
    "TRE-R01-EnsembleSavoirFaire-CISIS": "1.2.250.1.71.4.2.5",
    "TRE-G05-SousSectionTableauCNOP": "1.2.250.1.71.4.2.6",
    "TRE-R85-RolePriseCharge": "1.2.250.1.213.1.6.1.107",
    "TRE-R22-GenreActivite": "1.2.250.1.213.1.6.1.19",
    "TRE-R94-ProfessionSocial": "1.2.250.1.213.1.6.1.4",
    "TRE-R95-UsagerTitre": "1.2.250.1.213.1.6.1.109",
    "TRE-R291-AutreProfession": "1.2.250.1.213.1.6.1.140",
    "TRE-R21-Fonction": "1.2.250.1.213.1.6.1.17",
}


@pytest.mark.parametrize("key", sorted(FILES))
def test_value_set_extracts_match_the_ans_ig(key: str) -> None:
    """profiles/terminology is an extract; the ANS IG copy in the corpus stays the source of truth."""
    names = {"J57": "ClassCode", "J58": "ConfidentialityCode", "J59": "ContentTypeCode", "J60": "FormatCode",
             "J61": "HealthcareFacilityTypeCode", "J62": "PracticeSettingCode", "J65": "SubjectRole",
             "J66": "TypeCode"}
    path = CORPUS / "terminology" / "ig-terminologie-de-sante" / f"ValueSet-JDV-{key}-{names[key]}-DMP.json"
    if not path.exists():
        pytest.skip(reason=f"corpus value set not available ({path.name})")
    resource = json.loads(path.read_text(encoding="utf-8"))
    codes = {c["code"] for include in resource["compose"]["include"] for c in include.get("concept", [])}
    assert codes == set(value_set(key).codes)
    if key == "J65":  # the VIHF role rules depend on these code-system OIDs
        for include in resource["compose"]["include"]:
            tail = include["system"].rsplit("/", 1)[-1]
            oid = _SYSTEM_OIDS[tail]
            for concept in include.get("concept", []):
                assert (concept["code"], oid) in value_set("J65"), (tail, concept["code"])


def test_attribute_names_are_those_of_the_ans_vihf_example() -> None:
    path = CORPUS / "xds" / "examples" / "ans-vihf" / "vihf_automate_example.xml"
    if not path.exists():
        pytest.skip(reason="ANS VIHF example not available in the corpus")
    security = etree.parse(str(path)).getroot()
    (assertion,) = security.iter("{urn:oasis:names:tc:SAML:2.0:assertion}Assertion")
    vihf = read_vihf(assertion)
    ours = {v for k, v in vars(ATTR).items() if k.isupper()}
    in_example = set(vihf.attributes)
    assert in_example <= ours, in_example - ours
    assert vihf.attributes[ATTR.ROLE] == ["AUTOMATE^1.2.250.1.213.1.1.4.6"]
    assert vihf.attributes[ATTR.PURPOSE] == ["normal^1.2.250.1.213.1.1.4.248"]
    assert vihf.issuer_format == "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName"
