"""`relais check`: input dispatch like serve, ADT identity, routes with --config, one-line refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway.commands.check import check_bytes, input_kind
from tests.support import CORPUS, FIXTURES

DMP_CONFIG = """
[[destination]]
name = "dmp"
kind = "dmp-xds"
url = "http://127.0.0.1:9/"

[[destination]]
name = "mhd"
kind = "mhd"
url = "http://127.0.0.1:9/fhir"
"""


def fixture(name: str) -> bytes:
    return (FIXTURES / "hl7v2" / name).read_bytes()


def test_input_dispatch_is_the_listeners() -> None:
    raw = fixture("adt_a01_vali.hl7")
    assert input_kind(raw) == ("hl7v2", raw)
    assert input_kind(b"\x0b" + raw + b"\x1c\r") == ("hl7v2", raw)  # a captured MLLP frame
    assert input_kind(b"\xef\xbb\xbf" + raw)[0] == "hl7v2"
    assert input_kind(b"  <?xml version='1.0'?><ClinicalDocument/>")[0] == "xml"
    assert input_kind(b"OBX|1|ED|...")[0] == "neither"
    framed = check_bytes(b"\x0b" + raw + b"\x1c\r", allow_test_ins=True)
    assert framed["outcome"] == "accepted" and framed["control_id"] == "ADT0001"


def test_neither_hl7_nor_xml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "note.txt"
    path.write_bytes(b"hello\n")
    run = subprocess.run([sys.executable, "-m", "gateway", "check", str(path)], capture_output=True, text=True)
    assert run.returncode == 1
    assert run.stdout.strip().count("\n") == 0 and "neither an HL7 v2 message" in run.stdout
    assert "Traceback" not in run.stderr


def test_adt_shows_the_fr_core_patient_it_would_record() -> None:
    out = check_bytes(fixture("adt_a01_vali.hl7"), allow_test_ins=True)
    assert out["adt"]["qualified"] is True and out["adt"]["trigger"] == "A01"
    patient = out["adt"]["patient"]
    assert patient["resourceType"] == "Patient"
    assert any(i.get("value") == "279035121518989" for i in patient["identifier"])
    prov = check_bytes(fixture("adt_a28_prov.hl7"), allow_test_ins=True)
    assert prov["adt"]["qualified"] is False


def test_config_shows_routes_and_what_a_destination_would_refuse(tmp_path: Path) -> None:
    config = tmp_path / "relais.toml"
    config.write_text(DMP_CONFIG, encoding="utf-8")
    submit = check_bytes(fixture("mdm_t02_initial.hl7"), allow_test_ins=True, config=str(config))
    assert submit["outcome"] == "accepted"
    assert {(r["destination"], r["status"]) for r in submit["routes"]} == {("dmp", "queued"), ("mhd", "queued")}
    delete = check_bytes(fixture("mdm_t04_delete.hl7"), allow_test_ins=True, config=str(config))
    assert delete["outcome"] == "accepted"  # ITI-57 to the DMP, the PDSM4DMP PATCH to the MHD recipient
    assert {(r["destination"], r["action"], r["status"]) for r in delete["routes"]} == {
        ("dmp", "delete", "queued"), ("mhd", "delete", "queued")}
    held = check_bytes(fixture("mdm_t02_initial.hl7"), allow_test_ins=False, config=str(config))
    assert held["outcome"] == "held"
    assert all(r["status"] == "held" and "INS_OID_TEST" in r["reason"] for r in held["routes"])


def test_a_replacement_naming_no_parent_would_be_refused_by_the_destination() -> None:
    from types import SimpleNamespace

    from gateway.commands.check import _refusal

    orphan = SimpleNamespace(action="replace", xds={"documentEntry": {}})
    assert str(_refusal("dmp-xds", orphan)).startswith("XDS_PARENT_UNKNOWN")
    assert str(_refusal("mhd", orphan)).startswith("XDS_PARENT_UNKNOWN")
    assert _refusal("file", orphan) is None
    assert _refusal("dmp-xds", SimpleNamespace(action="delete", xds={"documentEntry": {}})) is None


def test_bio_trod_is_routed_to_the_dmp(tmp_path: Path) -> None:
    sample = CORPUS / "cda/examples/ans-testcontenucda-3.0/BIO-TROD_2024.01_COVID-19.xml"
    if not sample.exists():
        import pytest

        pytest.skip("../shared/corpus is not beside the repository")
    config = tmp_path / "relais.toml"
    config.write_text(DMP_CONFIG, encoding="utf-8")
    out = check_bytes(sample.read_bytes(), allow_test_ins=True, config=str(config))
    assert out["outcome"] == "accepted" and out["errors"] == []
    assert out["xds"]["documentEntry"]["formatCode"]["code"] == "urn:ans:ci-sis:trod:2024"
    assert ("dmp", "queued") in {(r["destination"], r["status"]) for r in out["routes"]}


def test_text_output_never_prints_none(tmp_path: Path) -> None:
    for name in ("adt_a24_link.hl7", "oru_pidx_segment.hl7", "ack_inbound.hl7", "msh2_malformed.hl7"):
        run = subprocess.run([sys.executable, "-m", "gateway", "check", "--allow-test-ins", "--strict",
                              str(FIXTURES / "hl7v2" / name)], capture_output=True, text=True)
        assert "None" not in run.stdout and "Traceback" not in run.stderr, (name, run.stdout, run.stderr)
