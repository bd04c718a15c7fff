"""gateway.core.terminology: the committed DMP value sets and correspondence tables."""

from __future__ import annotations

import pytest

from gateway.core import terminology as t

EXPECTED_FILES = {
    "jdv_j66_typecode_dmp",
    "jdv_j57_classcode_dmp",
    "jdv_j58_confidentiality_dmp",
    "jdv_j59_contenttype_dmp",
    "jdv_j60_formatcode_dmp",
    "jdv_j61_facilitytype_dmp",
    "jdv_j62_practicesetting_dmp",
    "jdv_j65_subjectrole_dmp",
    "ass_x16_type_class_dmp",
    "ass_x04_type_class_cisis",
    "ass_a11_cda_model_format",
}


def test_all_files_present_with_source() -> None:
    assert set(t.names()) >= EXPECTED_FILES
    for name in EXPECTED_FILES:
        data = t.load(name)
        assert data["id"] and data["version"]
        source = data["source"]
        assert source["repo"] == "ansforge/IG-terminologie-de-sante"
        assert source["path"].startswith("ig/main/") and len(source["commit"]) == 40
        entries = data["codes"] if "codes" in data else list(data["map"].values())
        assert entries
        for entry in entries:
            assert set(entry) == {"code", "system", "display"}
            assert not entry["system"].startswith("urn:oid:")


def test_load_is_cached_and_names_resolve() -> None:
    assert t.load("jdv_j66_typecode_dmp") is t.load("JDV_J66")
    assert t.load("jdv-j66") is t.load("jdv_j66_typecode_dmp.json")
    with pytest.raises(KeyError):
        t.load("jdv_j99")
    with pytest.raises(KeyError):
        t.load("jdv")  # ambiguous prefix


def test_in_value_set() -> None:
    assert t.in_value_set("JDV_J66", "11502-2", "2.16.840.1.113883.6.1")
    assert t.in_value_set("JDV_J66", "11502-2", "urn:oid:2.16.840.1.113883.6.1")
    assert t.in_value_set("JDV_J66", "11502-2")
    assert not t.in_value_set("JDV_J66", "11502-2", "1.2.3")
    assert not t.in_value_set("JDV_J66", "10213-7")  # in X04 (CI-SIS) but not a DMP type
    assert not t.in_value_set("JDV_J66", None)
    assert t.in_value_set("JDV_J66", "AUTORIS-SOINS", "1.2.250.1.213.1.1.4.12")
    assert t.in_value_set("JDV_J61", "SA01", "1.2.250.1.71.4.2.4")
    assert t.in_value_set("JDV_J62", "ETABLISSEMENT", "1.2.250.1.213.1.1.4.9")
    assert t.in_value_set("JDV_J58", "INVISIBLE_REPRESENTANTS_LEGAUX", t.TRE_A07)
    assert not t.in_value_set("JDV_J58", "INVISIBLE_REP_LEGAUX")  # the v2 spelling is not a code
    assert t.in_value_set("JDV_J60", "urn:ihe:iti:xds-sd:pdf:2008", "1.3.6.1.4.1.19376.1.2.3")


def test_display_and_coded() -> None:
    assert t.display("JDV_J66", "11502-2") == "CR d'examens biologiques"
    assert t.display("JDV_J58", "N", t.HL7_CONFIDENTIALITY) == "Normal"
    assert t.display("JDV_J66", "nope") is None
    assert t.coded("JDV_J61", "SA01") == {
        "code": "SA01",
        "codeSystem": "1.2.250.1.71.4.2.4",
        "displayName": "Etablissement public de santé",
    }
    assert t.coded("JDV_J61", "SA01", "9.9.9") is None


def test_class_for_type_x16_then_x04() -> None:
    assert t.class_for_type("11502-2", "2.16.840.1.113883.6.1") == {
        "code": "10",
        "codeSystem": "1.2.250.1.213.1.1.4.1",
        "displayName": "Compte rendu",
    }
    assert t.class_for_type("18748-4") == {
        "code": "31",
        "codeSystem": "1.2.250.1.213.1.1.4.1",
        "displayName": "Imagerie médicale",
    }
    assert t.class_for_type("11369-6")["code"] == "52"  # type: ignore[index]
    # Only in ASS_X04 (CI-SIS): found through the fallback.
    assert "2.16.840.1.113883.6.1|10213-7" not in t.load("ass_x16_type_class_dmp")["map"]
    assert t.class_for_type("10213-7")["code"] == "10"  # type: ignore[index]
    assert t.class_for_type("AUTORIS-SOINS", "1.2.250.1.213.1.1.4.12")["code"] == "95"  # type: ignore[index]
    assert t.class_for_type("00000-0") is None
    assert t.class_for_type(None) is None


def test_format_for_templates() -> None:
    bio = [
        "2.16.840.1.113883.2.8.2.1",
        "1.2.250.1.213.1.1.1.1",
        "1.3.6.1.4.1.19376.1.3.3",
        "1.2.250.1.213.1.1.1.55",
    ]
    assert t.format_for_templates(bio, 3) == {
        "code": "urn:ihe:lab:xd-lab:2008",
        "codeSystem": "1.3.6.1.4.1.19376.1.2.3",
        "displayName": "Compte rendu structuré d'examens de biologie médicale",
    }
    vsm = t.format_for_templates(["1.2.250.1.213.1.1.1.1", "1.2.250.1.213.1.1.1.13"], 3)
    assert vsm is not None and vsm["code"] == "urn:asip:ci-sis:vsm:2012"
    assert vsm["codeSystem"] == "1.2.250.1.213.1.1.4.2.282"
    # ANS template preferred over the generic IHE one listed first
    apsr = t.format_for_templates(["1.3.6.1.4.1.19376.1.8.1.1.1", "1.2.250.1.213.1.1.1.57"], 3)
    assert apsr is not None and apsr["code"] == "urn:ihe:palm:apsr:2016"
    assert t.format_for_templates(["1.2.3"], 3) is None


def test_format_level1_by_media_type() -> None:
    pdf = t.format_for_templates(["1.3.6.1.4.1.19376.1.2.20"], 1, "application/pdf")
    assert pdf == {
        "code": "urn:ihe:iti:xds-sd:pdf:2008",
        "codeSystem": "1.3.6.1.4.1.19376.1.2.3",
        "displayName": "Document à corps non structuré en Pdf/A-1",
    }
    assert t.format_for_templates([], 1) == pdf
    text = t.format_for_templates([], 1, "text/plain")
    assert text is not None and text["code"] == "urn:ihe:iti:xds-sd:text:2008"
    assert t.format_for_templates([], 1, "image/jpeg")["code"] == "urn:ihe:iti-fr:xds-sd:jpeg:2010"  # type: ignore[index]
    assert t.format_for_templates([], 1, "application/x-unknown") is None


@pytest.mark.parametrize(
    ("pv1_2", "code", "label"),
    [
        ("I", "03", "Hospitalisation complète (non compris hospitalisation de semaine)"),
        ("O", "07", "Consultations soins externes"),
        ("R", "19", "Traitement et cure ambulatoire"),
        ("N", "97", "Type d'activité indifférencié"),
        ("E", "07", "Consultations soins externes"),
        (None, "97", "Type d'activité indifférencié"),
        ("Z", "97", "Type d'activité indifférencié"),
        ("i", "03", "Hospitalisation complète (non compris hospitalisation de semaine)"),
    ],
)
def test_content_type_for_patient_class(pv1_2: str | None, code: str, label: str) -> None:
    assert t.content_type_for_patient_class(pv1_2) == {
        "code": code,
        "codeSystem": "1.2.250.1.213.2.2",
        "displayName": label,
    }
    assert t.in_value_set("JDV_J59", code, "1.2.250.1.213.2.2")


def test_bio_trod_2024_gets_its_formatcode_from_j60() -> None:
    from gateway.core.terminology import format_for_templates

    found = format_for_templates(["1.2.250.1.213.1.1.1.1", "1.2.250.1.213.1.1.1.59"], level=3)
    assert found is not None and found["code"] == "urn:ans:ci-sis:trod:2024"
    assert found["codeSystem"] == "1.2.250.1.213.1.1.4.2.282"


def test_a11_supplement_only_fills_what_a11_lacks_and_j60_lists() -> None:
    from gateway.core.terminology import load

    a11 = load("ass_a11_cda_model_format")
    j60 = {(c["system"], c["code"]) for c in load("jdv_j60_formatcode_dmp")["codes"]}
    a11_targets = {(v["system"], v["code"]) for v in [*a11["map"].values(), *a11["nonxml"].values()]}
    supplement = load("ass_a11_supplement_j60")
    for template_id, line in supplement["map"].items():
        assert template_id not in a11["map"]
        assert (line["system"], line["code"]) in j60 and (line["system"], line["code"]) not in a11_targets
    # what J60 has and no CDA model maps to, as found when A11 5.0.0 was checked against J60
    assert set(supplement["j60_not_in_a11"]) == {
        "1.2.840.10008.5.1.4.1.1.88.59", "http://www.w3.org/2000/09/xmldsig#", "urn:asip:ci-sis:dlu:2024",
        "urn:asip:ci-sis:fr-su:2024", "urn:asip:ci-sis:ft-su:2024", "urn:asipSante:modelesHorsProfils:2011",
        "urn:ihe:iti:dsg:detached:2014",
    }
