"""ORU^R01 / MDM^T02/T10/T04 parsing and the volet rules (gateway.core.hl7v2.documents, base64)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from gateway.core.cda import sniff_cda
from gateway.core.hl7v2.base64 import decode_payload
from gateway.core.hl7v2.documents import (
    DocumentId,
    DocumentMessage,
    check_against_cda,
    parse_document_message,
)
from gateway.core.hl7v2.reader import Message
from gateway.errors import ValidationError
from gateway.model import Author, CdaHeader, Finding, Identifier, Organization, PatientIdentity

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2"
INS = "279035121518989"
PATIENT_WORDS = ("PAT-TROIS", "DOMINIQUE", "MARIE-LOUISE", "19790328", INS)


def load(name: str) -> str:
    return (FIXTURES / name).read_bytes().decode("utf-8")


def segments(text: str) -> list[str]:
    return [s for s in text.split("\r") if s]


def join(segs: list[str]) -> str:
    return "\r".join(segs) + "\r"


def set_field(seg: str, n: int, value: str) -> str:
    """Replace field n of a non-MSH segment."""
    parts = seg.split("|")
    while len(parts) <= n:
        parts.append("")
    parts[n] = value
    return "|".join(parts)


def edit(text: str, prefix: str, fn, nth: int = 0) -> str:
    """Apply ``fn`` to the nth segment starting with ``prefix``; fn returns str, None (delete) or list."""
    out: list[str] = []
    seen = 0
    for seg in segments(text):
        if seg.startswith(prefix):
            if seen == nth:
                seen += 1
                res = fn(seg)
                if res is None:
                    continue
                out.extend([res] if isinstance(res, str) else res)
                continue
            seen += 1
        out.append(seg)
    assert seen > nth, f"no segment {prefix}#{nth}"
    return join(out)


def parse(text: str) -> tuple[DocumentMessage, list[Finding]]:
    return parse_document_message(Message.parse(text))


def codes(findings: list[Finding], severity: str | None = None) -> list[str]:
    return [f.code for f in findings if severity is None or f.severity == severity]


def obx5(payload: str, kind: str = "text") -> str:
    return f"^{kind}^XML^Base64^{payload}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def assert_no_patient_data(findings: list[Finding]) -> None:
    for f in findings:
        for word in PATIENT_WORDS:
            assert word not in f.message, (f.code, f.message)


# ---------------------------------------------------------------- fixtures parse clean


@pytest.mark.parametrize(
    ("name", "trigger", "action", "status"),
    [
        ("mdm_t02_initial.hl7", "T02", "submit", "F"),
        ("mdm_t10_replace.hl7", "T10", "replace", "C"),
        ("mdm_t04_delete.hl7", "T04", "delete", "D"),
        ("oru_doc_r01_initial.hl7", "R01", "submit", "F"),
    ],
)
def test_fixtures_parse_without_findings(name: str, trigger: str, action: str, status: str) -> None:
    dm, findings = parse(load(name))
    assert findings == []
    assert dm.trigger == trigger
    assert dm.action == action
    assert len(dm.documents) == 1
    doc = dm.documents[0]
    assert doc.result_status == status
    assert doc.location == "OBX[1]-5.5"
    assert doc.type_code == {"code": "11488-4", "codeSystem": "LN", "displayName": "CR de consultation"}
    assert sniff_cda(doc.data)
    assert dm.patient.ins == Identifier(INS, "1.2.250.1.213.1.4.10", "ASIP-SANTE-INS-NIR", "INS")
    assert dm.patient_class == "I"
    assert dm.dmp_bound
    assert dm.flags["ACK_RECEPTION"] is True
    assert dm.flags["MASQUE_PS"] is False
    assert dm.sender is not None and dm.sender.person is not None and dm.sender.organization is not None
    assert dm.sender.person.id == "801234567890"
    assert dm.sender.person.id_root == "1.2.250.1.71.4.2.1"
    assert dm.sender.organization.id == "1999000001"
    assert dm.sender.organization.id_type == "IDNST"
    assert dm.sender.organization.id_root == "1.2.250.1.71.4.2.2"


def test_mdm_txa_ids() -> None:
    dm, _ = parse(load("mdm_t10_replace.hl7"))
    assert dm.txa12 == DocumentId("1.2.250.1.999.1.1.20250101.2")
    assert dm.txa13 is not None and dm.txa13.unique_id == "1.2.250.1.999.1.1.20250101.1"
    ctx = dm.submission_context(submission_time="20250101083000")
    assert ctx.action == "replace"
    assert ctx.parent_document_id == "1.2.250.1.999.1.1.20250101.1"
    assert ctx.flags["DESTDMP"] is True
    assert ctx.patient_class == "I"
    assert ctx.submission_time == "20250101083000"
    assert ctx.type_code is not None and ctx.type_code["code"] == "11488-4"


def test_oru_recipients_reply_to_and_mail_body() -> None:
    dm, _ = parse(load("oru_doc_r01_initial.hl7"))
    assert dm.recipients == ("paul.confrere@test.mssante.fr",)
    assert dm.reply_to == "secretariat@test.mssante.fr"
    assert dm.mail_body_ps is not None and dm.mail_body_ps.startswith("Bonjour")
    assert dm.mail_body_patient is None


def test_document_bytes_are_not_in_repr() -> None:
    dm, _ = parse(load("mdm_t02_initial.hl7"))
    assert "ClinicalDocument" not in repr(dm.documents[0])
    assert b"ClinicalDocument" in dm.documents[0].data


# ---------------------------------------------------------------- message type / version


def test_unsupported_message_type() -> None:
    text = load("mdm_t02_initial.hl7").replace("MDM^T02^MDM_T02", "MDM^T01^MDM_T01", 1)
    dm, findings = parse(text)
    assert codes(findings) == ["MSG_TYPE_UNSUPPORTED"]
    assert findings[0].location == "MSH-9"
    assert dm.documents == () and dm.action is None
    with pytest.raises(ValidationError):
        dm.submission_context()


def test_adt_is_not_a_document_message() -> None:
    _, findings = parse(load("adt_a01_vali.hl7"))
    assert codes(findings) == ["MSG_TYPE_UNSUPPORTED"]


def test_unexpected_version_is_a_warning() -> None:
    text = load("oru_doc_r01_initial.hl7").replace("|T|2.5|", "|T|2.6|", 1)
    dm, findings = parse(text)
    assert codes(findings) == ["MSG_VERSION_UNEXPECTED"]
    assert findings[0].severity == "warning" and findings[0].location == "MSH-12"
    assert dm.action == "submit"


# ---------------------------------------------------------------- ORC-1 / OBX-11 / trigger


@pytest.mark.parametrize(
    ("name", "orc", "status", "location"),
    [
        ("mdm_t02_initial.hl7", "RO", None, "ORC-1"),
        ("mdm_t02_initial.hl7", None, "C", "OBX[1]-11"),
        ("mdm_t10_replace.hl7", "NW", None, "ORC-1"),
        ("mdm_t04_delete.hl7", None, "F", "OBX[1]-11"),
        ("oru_doc_r01_initial.hl7", None, "D", "OBX[1]-11"),
        ("oru_doc_r01_initial.hl7", "SC", None, "ORC-1"),
    ],
)
def test_action_inconsistent(name: str, orc: str | None, status: str | None, location: str) -> None:
    text = load(name)
    if orc is not None:
        text = edit(text, "ORC|", lambda s: set_field(s, 1, orc))
    if status is not None:
        text = edit(text, "OBX|1|ED", lambda s: set_field(s, 11, status))
    dm, findings = parse(text)
    errs = [f for f in findings if f.code == "DOC_ACTION_INCONSISTENT"]
    assert errs and errs[0].location == location and errs[0].severity == "error"
    assert all(word in errs[0].message for word in ("ORC-1", "MSH-9.2")) or "is not NW" in errs[0].message
    assert dm.action is None


def test_oru_replace_and_delete_follow_orc() -> None:
    text = edit(load("oru_doc_r01_initial.hl7"), "ORC|", lambda s: "ORC|RO")
    text = edit(text, "OBX|1|ED", lambda s: set_field(s, 11, "C"))
    dm, findings = parse(text)
    assert findings == [] and dm.action == "replace"
    text = edit(load("oru_doc_r01_initial.hl7"), "ORC|", lambda s: "ORC|CA")
    text = edit(text, "OBX|1|ED", lambda s: set_field(s, 11, "D"))
    dm, findings = parse(text)
    assert findings == [] and dm.action == "delete"


def test_orc_missing() -> None:
    dm, findings = parse(edit(load("mdm_t02_initial.hl7"), "ORC|", lambda s: None))
    assert "ORC_MISSING" in codes(findings, "error")
    assert dm.action is None


# ---------------------------------------------------------------- document OBX


def test_doc_missing() -> None:
    _, findings = parse(edit(load("mdm_t02_initial.hl7"), "OBX|1|ED", lambda s: None))
    assert "DOC_MISSING" in codes(findings, "error")


def test_mdm_carries_one_document_oru_two() -> None:
    mdm = edit(load("mdm_t02_initial.hl7"), "OBX|1|ED", lambda s: [s, s.replace("OBX|1|", "OBX|2|", 1)])
    _, findings = parse(mdm)
    assert "DOC_TOO_MANY" in codes(findings, "error")
    oru = edit(load("oru_doc_r01_initial.hl7"), "OBX|1|ED", lambda s: [s, s.replace("OBX|1|", "OBX|2|", 1)])
    dm, findings = parse(oru)
    assert findings == []
    assert [d.obx_index for d in dm.documents] == [1, 2]
    oru3 = edit(oru, "OBX|1|ED", lambda s: [s, s.replace("OBX|1|", "OBX|3|", 1)])
    _, findings = parse(oru3)
    assert "DOC_TOO_MANY" in codes(findings, "error")


def test_ed_attachment_after_document_is_ignored() -> None:
    attachment = "OBX|2|ED|1^XDM/1.0/DDM||^text^^Base64^Q29ycHM=||||||F"
    text = edit(load("mdm_t02_initial.hl7"), "PRT|", lambda s: [s, attachment])
    dm, findings = parse(text)
    assert len(dm.documents) == 1
    assert codes(findings) == ["OBX_UNEXPECTED"]


@pytest.mark.parametrize(
    ("name", "written", "code"),
    [
        ("mdm_t02_initial.hl7", "TEXT", "DOC_OBX5_CASE"),
        ("oru_doc_r01_initial.hl7", "text", "DOC_OBX5_CASE"),
        ("mdm_t02_initial.hl7", "AP", "DOC_OBX5_TYPE"),
    ],
)
def test_obx5_data_type_case(name: str, written: str, code: str) -> None:
    text = edit(
        load(name),
        "OBX|1|ED",
        lambda s: s.replace("^text^XML", f"^{written}^XML").replace("^TEXT^XML", f"^{written}^XML"),
    )
    dm, findings = parse(text)
    assert codes(findings) == [code]
    assert findings[0].severity == "warning" and findings[0].location == "OBX[1]-5.2"
    assert dm.documents[0].data


def test_obx5_not_base64_is_an_error() -> None:
    text = edit(load("mdm_t02_initial.hl7"), "OBX|1|ED", lambda s: s.replace("^XML^Base64^", "^XML^A^"))
    dm, findings = parse(text)
    assert "DOC_ENCODING_UNSUPPORTED" in codes(findings, "error")
    assert dm.documents[0].data == b""


def _with_payload(name: str, payload: str) -> str:
    kind = "text" if name.startswith("mdm") else "TEXT"
    return edit(load(name), "OBX|1|ED", lambda s: set_field(s, 5, obx5(payload, kind)))


def test_missing_padding_is_repaired_with_warning() -> None:
    cda = b'<ClinicalDocument xmlns="urn:hl7-org:v3"><id root="1.2.3"/></ClinicalDocument>!'
    payload = b64(cda)
    assert payload.endswith("=")
    dm, findings = parse(_with_payload("mdm_t02_initial.hl7", payload.rstrip("=")))
    assert codes(findings) == ["B64_PADDING_MISSING"]
    assert findings[0].location == "OBX[1]-5.5"
    assert dm.documents[0].data == cda


def test_impossible_base64_length() -> None:
    _, findings = parse(_with_payload("mdm_t02_initial.hl7", "QUJDRAEEE"))
    errs = [f for f in findings if f.severity == "error"]
    assert [f.code for f in errs] == ["B64_LENGTH"]
    assert errs[0].location == "OBX[1]-5.5"


def test_placeholder_instead_of_cda() -> None:
    # the ANS "non-Base64" samples carry this sentence instead of a document
    payload = b64(b"Document medcial au format CDA niveau 1")
    _, findings = parse(_with_payload("oru_doc_r01_initial.hl7", payload))
    assert codes(findings, "error") == ["DOC_NOT_CDA"]
    assert findings[-1].location == "OBX[1]-5.5"


@pytest.mark.parametrize(
    ("data", "ok"),
    [
        (b'<ClinicalDocument xmlns="urn:hl7-org:v3">', True),
        (
            b'\xef\xbb\xbf<?xml version="1.0" encoding="UTF-8"?>\n<!-- x -->\n<?xml-stylesheet href="a.xsl"?>'
            b'\r\n<ClinicalDocument xmlns:xsi="x" xmlns="urn:hl7-org:v3">',
            True,
        ),
        (b"<cda:ClinicalDocument xmlns:cda='urn:hl7-org:v3'>", True),
        ('<ClinicalDocument xmlns="urn:hl7-org:v3"/>'.encode("utf-16"), True),
        (b"<ClinicalDocument>", False),
        (b'<ClinicalDocument xmlns="urn:hl7-org:v2">', False),
        (b'<cda:ClinicalDocument xmlns="urn:hl7-org:v3">', False),
        (b'<Bundle xmlns="http://hl7.org/fhir">', False),
        (b'<?xml version="1.0"?><ClinicalDocumentX xmlns="urn:hl7-org:v3">', False),
        (b"%PDF-1.4", False),
        (b"", False),
    ],
)
def test_sniff_cda(data: bytes, ok: bool) -> None:
    assert sniff_cda(data) is ok


def test_obr_and_txa_type_mismatch_are_warnings() -> None:
    text = edit(load("mdm_t02_initial.hl7"), "OBR|", lambda s: set_field(s, 4, "11490-0^Lettre de sortie^LN"))
    text = edit(text, "TXA|", lambda s: set_field(s, 2, "11490-0"))
    _, findings = parse(text)
    assert sorted(codes(findings, "warning")) == ["DOC_TYPE_OBR_MISMATCH", "DOC_TYPE_TXA_MISMATCH"]
    assert codes(findings, "error") == []


def test_code_without_system_warns() -> None:
    text = edit(
        load("mdm_t02_initial.hl7"), "OBX|1|ED", lambda s: set_field(s, 3, "11488-4^CR de consultation")
    )
    _, findings = parse(text)
    assert "CODE_SYSTEM_MISSING" in codes(findings, "warning")


def test_t10_requires_txa13() -> None:
    text = edit(load("mdm_t10_replace.hl7"), "TXA|", lambda s: set_field(s, 13, ""))
    _, findings = parse(text)
    assert codes(findings, "error") == ["TXA13_MISSING"]
    assert findings[0].location == "TXA-13"


def test_txa12_missing() -> None:
    _, findings = parse(edit(load("mdm_t02_initial.hl7"), "TXA|", lambda s: set_field(s, 12, "")))
    assert codes(findings, "error") == ["TXA12_MISSING"]


def test_pid3_missing() -> None:
    _, findings = parse(edit(load("mdm_t02_initial.hl7"), "PID|", lambda s: set_field(s, 3, "")))
    assert codes(findings, "error") == ["PID3_MISSING"]
    assert findings[0].location == "PID-3"
    _, findings = parse(edit(load("mdm_t02_initial.hl7"), "PID|", lambda s: None))
    assert "PID3_MISSING" in codes(findings, "error")


# ---------------------------------------------------------------- metadata


def test_meta_missing_and_destdmp_absent_means_not_dmp() -> None:
    text = edit(load("mdm_t02_initial.hl7"), "OBX|7|CWE|DESTDMP", lambda s: None)
    dm, findings = parse(text)
    assert not dm.dmp_bound and "DESTDMP" not in dm.flags
    missing = [f for f in findings if f.code == "META_MISSING"]
    assert len(missing) == 1 and "DESTDMP" in missing[0].message and missing[0].severity == "warning"
    assert codes(findings, "error") == []  # not DMP bound: no SB needed either


def test_meta_value_invalid() -> None:
    text = edit(
        load("mdm_t02_initial.hl7"),
        "OBX|2|CWE|MASQUE_PS",
        lambda s: set_field(s, 5, "O^^expandedYes-NoIndicator"),
    )
    dm, findings = parse(text)
    assert codes(findings) == ["META_VALUE_INVALID"]
    assert findings[0].location == "OBX[2]-5.1"
    assert "MASQUE_PS" not in dm.flags


def test_meta_without_coding_system_and_v12_names() -> None:
    text = edit(
        load("mdm_t02_initial.hl7"),
        "OBX|4|CWE|INVISIBLE_REP_LEGAUX",
        lambda s: "OBX|4|CWE|INVISIBLE_REPRESENTANTS_LEGAUX^Non visible||Y||||||F",
    )
    dm, findings = parse(text)
    assert codes(findings) == ["META_CODING_SYSTEM"]
    assert dm.flags["INVISIBLE_REP_LEGAUX"] is True


def test_defective_mail_body_is_only_a_warning() -> None:
    # 93 characters: the truncated CORPSMAIL_PS of the ANS ORU samples
    truncated = b64("Cher confrère, vous trouverez ci-joint le CR d’imagerie de M.Dupont".encode())[:93]
    text = edit(
        load("oru_doc_r01_initial.hl7"),
        "OBX|12|ED|CORPSMAIL_PS",
        lambda s: set_field(s, 5, f"^TEXT^^Base64^{truncated}"),
    )
    dm, findings = parse(text)
    assert codes(findings) == ["META_MAIL_BODY_INVALID"]
    assert findings[0].severity == "warning" and findings[0].location == "OBX[12]-5.5"
    assert "B64_LENGTH" in findings[0].message
    assert dm.mail_body_ps is None


def test_patient_mail_body_and_no_reply() -> None:
    body = b64(b"Bonjour")
    text = edit(
        load("oru_doc_r01_initial.hl7"),
        "OBX|9|CE|DESTMSSANTEPAT",
        lambda s: [s.replace("||N^^", "||Y^^"), "NTE|1|||FIN"],
    )
    text = join(
        [
            *segments(text),
            f"OBX|13|ED|CORPSMAIL_PATIENT^Corps du mail patient^MetaDMPMSS||^TEXT^^Base64^{body}||||||F",
        ]
    )
    dm, findings = parse(text)
    assert findings == []
    assert dm.flags["DESTMSSANTEPAT"] is True
    assert dm.patient_no_reply
    assert dm.mail_body_patient == "Bonjour"


# ---------------------------------------------------------------- PRT


def test_prt_sb_missing_when_dmp_bound() -> None:
    _, findings = parse(edit(load("mdm_t02_initial.hl7"), "PRT|", lambda s: None))
    assert codes(findings, "error") == ["PRT_SB_MISSING"]


def test_prt_sb_not_needed_without_dmp() -> None:
    text = edit(load("mdm_t02_initial.hl7"), "PRT|", lambda s: None)
    text = edit(text, "OBX|7|CWE|DESTDMP", lambda s: s.replace("||Y^^", "||N^^"))
    dm, findings = parse(text)
    assert findings == [] and dm.sender is None and not dm.dmp_bound


def test_prt_trailing_no_break_spaces_are_stripped() -> None:
    # the Ségur MDM sample pads its SB PRT line with U+00A0
    dm, findings = parse(edit(load("mdm_t02_initial.hl7"), "PRT|", lambda s: s + "\u00a0" * 18))
    assert findings == []
    assert dm.sender is not None and dm.sender.organization is not None
    assert dm.sender.organization.id == "1999000001"


def test_prt_sb_written_without_label_and_unknown_role() -> None:
    text = edit(
        load("mdm_t02_initial.hl7"),
        "PRT|",
        lambda s: [s.replace("SB^Send by^participation", "SB^^participation"), "PRT||UC||XYZ"],
    )
    dm, findings = parse(text)
    assert dm.sender is not None
    assert codes(findings) == ["PRT_ROLE_UNKNOWN"]
    assert findings[0].location == "PRT[2]-4"


def test_prt_sb_incomplete_warns() -> None:
    text = edit(load("mdm_t02_initial.hl7"), "PRT|", lambda s: set_field(s, 8, ""))
    dm, findings = parse(text)
    assert codes(findings) == ["PRT_SB_INCOMPLETE"]
    assert dm.sender is not None and dm.sender.organization is None


# ---------------------------------------------------------------- privacy


def test_findings_never_quote_patient_traits() -> None:
    base = load("mdm_t02_initial.hl7")
    variants = [
        edit(base, "ORC|", lambda s: "ORC|RO"),
        edit(base, "PRT|", lambda s: None),
        edit(base, "OBX|1|ED", lambda s: set_field(s, 5, obx5(b64(b"PAT-TROIS DOMINIQUE")))),
        edit(base, "TXA|", lambda s: set_field(s, 2, "X")),
        base.replace("MDM^T02", "MDM^T99"),
    ]
    for text in variants:
        _, findings = parse(text)
        assert findings
        assert_no_patient_data(findings)


# ---------------------------------------------------------------- base64 unit


@pytest.mark.parametrize(
    ("text", "data", "codes_"),
    [
        ("QUJD", b"ABC", []),
        ("QUI=", b"AB", []),
        ("QUI", b"AB", ["B64_PADDING_MISSING"]),
        ("QQ", b"A", ["B64_PADDING_MISSING"]),
        ("QQ=", b"A", ["B64_PADDING_MISSING"]),
        ("QU JD\r\nRA==", b"ABCD", []),
        ("QUJDR", b"", ["B64_LENGTH"]),
        ("QUJ*", b"", ["B64_INVALID"]),
        ("QU=I", b"", ["B64_INVALID"]),
        ("QUJD=", b"", ["B64_INVALID"]),
        ("QUJD-_", b"", ["B64_INVALID"]),
        ("   ", b"", ["B64_EMPTY"]),
    ],
)
def test_decode_payload(text: str, data: bytes, codes_: list[str]) -> None:
    out, findings = decode_payload(text, "OBX[1]-5.5")
    assert out == data
    assert [f.code for f in findings] == codes_
    assert all(f.location == "OBX[1]-5.5" for f in findings)
    for f in findings:
        assert f.severity == ("warning" if f.code == "B64_PADDING_MISSING" else "error")


# ---------------------------------------------------------------- CDA cross-checks


def header(**kw) -> CdaHeader:
    patient = kw.pop(
        "patient",
        PatientIdentity(
            identifiers=(
                Identifier("P000123", "1.2.250.1.999.1.2"),
                Identifier(INS, "1.2.250.1.213.1.4.10"),
            )
        ),
    )
    authors = kw.pop(
        "authors", (Author(organization=Organization(id="1999000001", id_root="1.2.250.1.71.4.2.2")),)
    )
    defaults = {
        "id_root": "1.2.250.1.999.1.1.20250101.1",
        "id_extension": None,
        "code": {"code": "11488-4", "codeSystem": "2.16.840.1.113883.6.1", "displayName": "CR"},
    }
    defaults.update(kw)
    return CdaHeader(patient=patient, authors=authors, **defaults)


def _mdm(name: str = "mdm_t02_initial.hl7", text: str | None = None) -> DocumentMessage:
    dm, findings = parse(text or load(name))
    assert codes(findings, "error") == []
    return dm


def test_check_against_cda_ok() -> None:
    dm = _mdm()
    assert check_against_cda(dm, dm.documents[0], header()) == []


def test_check_against_cda_local_id_only_in_cda_is_fine() -> None:
    dm = _mdm()
    extra = PatientIdentity(
        identifiers=(Identifier("X1", "1.2.3.4"), Identifier(INS, "1.2.250.1.213.1.4.10"))
    )
    assert check_against_cda(dm, dm.documents[0], header(patient=extra)) == []


@pytest.mark.parametrize(
    "cda_ids",
    [
        (Identifier("277076322082910", "1.2.250.1.213.1.4.8"),),  # the Ségur delete ORU case
        (Identifier(INS, "1.2.250.1.213.1.4.8"),),  # same digits, production OID
        (Identifier("P000123", "1.2.250.1.999.1.2"),),  # no INS in the CDA
    ],
)
def test_ins_pid_cda_mismatch(cda_ids: tuple[Identifier, ...]) -> None:
    dm = _mdm()
    findings = check_against_cda(dm, dm.documents[0], header(patient=PatientIdentity(identifiers=cda_ids)))
    assert codes(findings) == ["INS_PID_CDA_MISMATCH"]
    f = findings[0]
    assert f.severity == "error" and f.location == "PID-3"
    assert "PID-3" in f.message and "ClinicalDocument/recordTarget/patientRole/id" in f.message
    assert "1.2.250.1.213.1.4.10" in f.message and "8989" in f.message
    assert INS not in f.message and "277076322082910" not in f.message


def test_txa12_mismatch_and_forms() -> None:
    dm = _mdm()
    findings = check_against_cda(dm, dm.documents[0], header(id_root="1.2.250.1.999.1.1.20250101.9"))
    assert codes(findings) == ["TXA12_CDA_MISMATCH"]
    assert findings[0].location == "TXA-12" and "1.2.250.1.999.1.1.20250101.9" in findings[0].message
    # ext^^root^ISO against a CDA id with extension
    text = edit(
        load("mdm_t02_initial.hl7"), "TXA|", lambda s: set_field(s, 12, "DOC42^^1.2.250.1.999.1.1^ISO")
    )
    dm = _mdm(text=text)
    assert dm.txa12 is not None and dm.txa12.unique_id == "1.2.250.1.999.1.1^DOC42"
    assert (
        check_against_cda(dm, dm.documents[0], header(id_root="1.2.250.1.999.1.1", id_extension="DOC42"))
        == []
    )
    assert codes(check_against_cda(dm, dm.documents[0], header(id_root="1.2.250.1.999.1.1"))) == [
        "TXA12_CDA_MISMATCH"
    ]


def test_txa12_namespace_is_tolerated_with_warning() -> None:
    text = edit(
        load("mdm_t02_initial.hl7"),
        "TXA|",
        lambda s: set_field(s, 12, "1.2.250.1.999.1.1.20250101.1^Organisation-Y"),
    )
    dm = _mdm(text=text)
    findings = check_against_cda(dm, dm.documents[0], header())
    assert codes(findings) == ["TXA_ID_NAMESPACE"]
    assert findings[0].severity == "warning" and findings[0].location == "TXA-12.2"


def test_txa13_vs_parent_document() -> None:
    dm = _mdm("mdm_t10_replace.hl7")
    ok = header(
        id_root="1.2.250.1.999.1.1.20250101.2",
        parent_document_id="1.2.250.1.999.1.1.20250101.1",
        related_type="RPLC",
    )
    assert check_against_cda(dm, dm.documents[0], ok) == []
    bad = header(id_root="1.2.250.1.999.1.1.20250101.2", parent_document_id="1.2.3", related_type="RPLC")
    findings = check_against_cda(dm, dm.documents[0], bad)
    assert codes(findings, "warning") == ["TXA13_CDA_MISMATCH"] and codes(findings, "error") == []
    none = header(id_root="1.2.250.1.999.1.1.20250101.2")
    assert codes(check_against_cda(dm, dm.documents[0], none)) == ["TXA13_CDA_MISMATCH"]


def test_sender_org_and_type_code_mismatch_are_warnings() -> None:
    dm = _mdm()
    h = header(
        authors=(Author(organization=Organization(id="1120456789")),),
        code={"code": "18748-4", "codeSystem": "2.16.840.1.113883.6.1", "displayName": "CR imagerie"},
    )
    findings = check_against_cda(dm, dm.documents[0], h)
    assert sorted(codes(findings, "warning")) == ["DOC_TYPE_CDA_MISMATCH", "SENDER_ORG_CDA_MISMATCH"]
    sender = next(f for f in findings if f.code == "SENDER_ORG_CDA_MISMATCH")
    assert sender.location == "PRT[1]-8.10"


@pytest.mark.parametrize(
    "name", ["mdm_t02_initial.hl7", "mdm_t10_replace.hl7", "mdm_t04_delete.hl7", "oru_doc_r01_initial.hl7"]
)
def test_fixture_cda_is_consistent_with_its_envelope(name: str) -> None:
    from gateway.core import cda
    dm = _mdm(name)
    doc = dm.documents[0]
    head = cda.parse_header(cda.parse_cda(doc.data))
    assert head.level == 1
    assert check_against_cda(dm, doc, head) == []


def test_sb_prt_service_and_device() -> None:
    """PRT-9.1 is the service the VIHF subject-id names; PRT-10 is the author when it is a system."""
    text = edit(load("mdm_t02_initial.hl7"), "PRT", lambda seg: set_field(seg, 9, "RADIOLOGIE^^^CLINIQUE"))
    dm, _ = parse(text)
    assert dm.sender is not None and dm.sender.person is not None
    assert (dm.sender.person.id, dm.sender.person.service, dm.sender.person.device) == ("801234567890", "RADIOLOGIE", False)

    def device(seg: str) -> str:
        return set_field(set_field(seg, 5, ""), 10, "AUTOMATE-42^RELAIS-BIO^1.2.250.1.999.9^ISO")

    dm, _ = parse(edit(load("mdm_t02_initial.hl7"), "PRT", device))
    person = dm.sender.person if dm.sender else None
    assert person is not None and person.device
    assert (person.id, person.software, person.id_root) == ("AUTOMATE-42", "RELAIS-BIO", "1.2.250.1.999.9")


def test_dmp_bound_document_id_with_extension_is_refused() -> None:
    """The DMP accepts root-only uniqueIds (volet §6): an OID^extension CDA id is an error for DESTDMP=Y."""
    from datetime import UTC, datetime

    from gateway.core.pipeline import Ids, PipelineOptions, analyse_hl7v2

    def with_extension(seg: str) -> str:
        parts = seg.split("|")
        comps = parts[5].split("^")
        cda = base64.b64decode(comps[4]).replace(
            b'<id root="1.2.250.1.999.1.1.20250101.1"/>',
            b'<id root="1.2.250.1.999.1.1.20250101" extension="1"/>',
        )
        assert b'extension="1"' in cda
        comps[4] = b64(cda)
        parts[5] = "^".join(comps)
        return "|".join(parts)

    text = edit(load("mdm_t02_initial.hl7"), "OBX|1|", with_extension)
    text = edit(text, "TXA", lambda seg: set_field(seg, 12, "1^^1.2.250.1.999.1.1.20250101^ISO"))
    ids = Ids(now=datetime(2025, 1, 2, tzinfo=UTC), new_uuid=lambda: "00000000-0000-4000-8000-000000000001")
    an = analyse_hl7v2(text.encode(), PipelineOptions(allow_test_ins=True), ids)
    assert "XDS_DOCUMENT_ID_EXTENSION" in [f.code for f in an.errors]
    assert an.ack_code != "AA"
