"""Regenerate our own HL7 v2 fixtures (document messages and PAM-FR ADT).

    python tools/make_fixtures.py            # writes fixtures/hl7v2/{mdm_,oru_doc_,adt_}*.hl7
    python tools/make_fixtures.py --check    # exit 1 if a file on disk differs

Everything here is fictitious except the public ANS test identity (INS
279035121518989 with the *test* OID 1.2.250.1.213.1.4.10, PAT-TROIS DOMINIQUE).
Segments end with CR, text is UTF-8, MSH-18 says ``UNICODE UTF-8``. OBX-5.5 carries
the base64 of the small level-1 CDA written below (its recordTarget ids equal PID-3
and its root-only id equals TXA-12). Output is deterministic: no clock, no random.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "fixtures" / "hl7v2"

INS = "279035121518989"
INS_OID = "1.2.250.1.213.1.4.10"
IPP = "P000123"
IPP_OID = "1.2.250.1.999.1.2"
DOC_ROOT = "1.2.250.1.999.1.1.20250101"
ID_INITIAL = f"{DOC_ROOT}.1"
ID_REPLACE = f"{DOC_ROOT}.2"
ID_ORU = f"{DOC_ROOT}.11"
ID_SECRET = f"{DOC_ROOT}.3"
ORG_ID = "1999000001"  # IDNST form (1 + FINESS) of a fictitious structure
RPPS = "801234567890"  # fictitious IDNPS

PID3 = f"{IPP}^^^RELAIS-TEST&{IPP_OID}&ISO^PI~{INS}^^^ASIP-SANTE-INS-NIR&{INS_OID}&ISO^INS"
PID5 = "PAT-TROIS^DOMINIQUE^DOMINIQUE MARIE-LOUISE^^^^L"


def segment(name: str, fields: dict[int, str]) -> str:
    """``name|f1|f2…`` from {field number: value}: no hand-counted pipes."""
    width = max(fields)
    return "|".join([name, *(fields.get(i, "") for i in range(1, width + 1))])


def pid(pid3: str, pid5: str, birth: str, sex: str, cog: str, status: str, account: str = "") -> str:
    fields = {1: "1", 3: pid3, 5: pid5, 7: birth, 8: sex, 11: f"^^^^^^BDL^^{cog}", 31: "N", 32: status}
    if account:
        fields[18] = account
    return segment("PID", fields)


PID = pid(PID3, PID5, "19790328", "F", "51215", "VALI", "V000456^^^RELAIS-TEST&1.2.250.1.999.1.3&ISO^AN")
PV1 = segment("PV1", {1: "1", 2: "I", 19: "V000789^^^RELAIS-TEST&1.2.250.1.999.1.4&ISO^VN"})

# A tiny one-page PDF: enough for a level-1 body, not meant to be rendered.
PDF = (
    b"%PDF-1.4\n"
    b"1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)

CDA_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <realmCode code="FR"/>
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
  <templateId root="2.16.840.1.113883.2.8.2.1" assigningAuthorityName="HL7 France"/>
  <templateId root="1.2.250.1.213.1.1.1.1" assigningAuthorityName="CI-SIS"/>
  <templateId root="1.3.6.1.4.1.19376.1.2.20" assigningAuthorityName="IHE XDS-SD"/>
  <id root="{doc_id}"/>
  <code code="11488-4" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="CR de consultation"/>
  <title>Compte rendu de consultation</title>
  <effectiveTime value="{time}+0100"/>
  <confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25" displayName="Normal"/>
  <languageCode code="fr-FR"/>
  <setId root="{set_id}"/>
  <versionNumber value="{version}"/>
  <recordTarget>
    <patientRole>
      <id root="{ipp_oid}" extension="{ipp}"/>
      <id root="{ins_oid}" extension="{ins}"/>
      <patient>
        <name>
          <given qualifier="BR">DOMINIQUE</given>
          <given>DOMINIQUE MARIE-LOUISE</given>
          <family qualifier="BR">PAT-TROIS</family>
        </name>
        <administrativeGenderCode code="F" codeSystem="2.16.840.1.113883.5.1" displayName="Féminin"/>
        <birthTime value="19790328"/>
        <birthplace><place><addr><county>51215</county></addr></place></birthplace>
      </patient>
    </patientRole>
  </recordTarget>
  <author>
    <time value="{time}+0100"/>
    <assignedAuthor>
      <id root="1.2.250.1.71.4.2.1" extension="{rpps}"/>
      <code code="10" codeSystem="1.2.250.1.71.1.2.7" displayName="Médecin"/>
      <assignedPerson><name><prefix>DR</prefix><family>MEDECIN</family><given>JEAN</given></name></assignedPerson>
      <representedOrganization>
        <id root="1.2.250.1.71.4.2.2" extension="{org_id}"/>
        <name>CLINIQUE RELAIS</name>
      </representedOrganization>
    </assignedAuthor>
  </author>
  <custodian>
    <assignedCustodian>
      <representedCustodianOrganization>
        <id root="1.2.250.1.71.4.2.2" extension="{org_id}"/>
        <name>CLINIQUE RELAIS</name>
      </representedCustodianOrganization>
    </assignedCustodian>
  </custodian>
  <legalAuthenticator>
    <time value="{time}+0100"/>
    <signatureCode code="S"/>
    <assignedEntity>
      <id root="1.2.250.1.71.4.2.1" extension="{rpps}"/>
      <assignedPerson><name><family>MEDECIN</family><given>JEAN</given></name></assignedPerson>
    </assignedEntity>
  </legalAuthenticator>
  <documentationOf>
    <serviceEvent>
      <effectiveTime><low value="20250101090000+0100"/><high value="20250101091500+0100"/></effectiveTime>
      <performer typeCode="PRF">
        <assignedEntity>
          <id root="1.2.250.1.71.4.2.1" extension="{rpps}"/>
          <representedOrganization>
            <standardIndustryClassCode code="ETABLISSEMENT" codeSystem="1.2.250.1.213.1.1.4.9" displayName="Etablissement de santé"/>
          </representedOrganization>
        </assignedEntity>
      </performer>
    </serviceEvent>
  </documentationOf>{related}
  <componentOf>
    <encompassingEncounter>
      <effectiveTime><low value="20250101"/></effectiveTime>
      <location>
        <healthCareFacility>
          <code code="SA01" codeSystem="1.2.250.1.71.4.2.4" displayName="Etablissement Public de santé"/>
        </healthCareFacility>
      </location>
    </encompassingEncounter>
  </componentOf>
  <component>
    <nonXMLBody>
      <text mediaType="application/pdf" representation="B64">{pdf}</text>
    </nonXMLBody>
  </component>
</ClinicalDocument>
"""


def make_cda(doc_id: str, version: int = 1, parent_id: str | None = None) -> bytes:
    """Our level-1 CDA, UTF-8 bytes; ``parent_id`` adds a relatedDocument RPLC."""
    related = ""
    if parent_id:
        related = (
            '\n  <relatedDocument typeCode="RPLC">\n'
            f'    <parentDocument><id root="{parent_id}"/></parentDocument>\n'
            "  </relatedDocument>"
        )
    text = CDA_TEMPLATE.format(
        doc_id=doc_id,
        time="20250101093000",
        set_id=DOC_ROOT,
        version=version,
        ipp_oid=IPP_OID,
        ipp=IPP,
        ins_oid=INS_OID,
        ins=INS,
        rpps=RPPS,
        org_id=ORG_ID,
        related=related,
        pdf=base64.b64encode(PDF).decode("ascii"),
    )
    return text.encode("utf-8")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


META_LABELS = {
    "MASQUE_PS": "Masqué aux professionnels de Santé",
    "INVISIBLE_PATIENT": "Document Non Visible par le patient",
    "INVISIBLE_REP_LEGAUX": "Non visible par les représentants Légaux du patient",
    "CONNEXION_SECRETE": "Connexion Secrete",
    "MODIF_CONF_CODE": "Modification Confidentiality Code",
    "DESTDMP": "Destinataire DMP",
    "DESTMSSANTEPS": "Destinataire (Professionnel de Santé, organisation ou BAL applicative)",
    "DESTMSSANTEPAT": "Destinataire Patient",
    "ACK_RECEPTION": "Accusé de réception",
    "ACK_LECTURE_MSS": "Accusé de lecture",
}


def metadata(first_set_id: int, dt: str, values: dict[str, str]) -> list[str]:
    out = []
    for i, (code, label) in enumerate(META_LABELS.items()):
        out.append(
            f"OBX|{first_set_id + i}|{dt}|{code}^{label}^MetaDMPMSS||{values.get(code, 'N')}^^expandedYes-NoIndicator||||||F"
        )
    return out


SB = (
    f"PRT||UC||SB^Send by^participation|{RPPS}^MEDECIN^JEAN^^^^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"
    f"|||CLINIQUE RELAIS^^^^^ASIP-SANTE-ST&1.2.250.1.71.4.2.2&ISO^IDNST^^^{ORG_ID}"
)
TYPE = "11488-4^CR de consultation^LN"
DMP_ONLY = {"DESTDMP": "Y", "ACK_RECEPTION": "Y"}


# A sender whose PRT-8 gives a FINESS (FINEG) rather than an IdNat, as in the ANS Ségur MDM,
# with its service in PRT-9: Struct_IdNat 1 + FINESS, VIHF subject-id "family, given, service".
SB_FINESS = (
    f"PRT||UC||SB^Send by^participation|{RPPS}^MEDECIN^JEAN^^^^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"
    "|||CLINIQUE RELAIS^^^^^ASIP-SANTE-ST&1.2.250.1.71.4.2.2&ISO^FINEG^^^999000001|CARDIOLOGIE"
)
SECRET = {**DMP_ONLY, "CONNEXION_SECRETE": "Y", "INVISIBLE_PATIENT": "Y"}


def mdm(
    trigger: str,
    control_id: str,
    orc: str,
    status: str,
    txa12: str,
    txa13: str,
    cda: bytes,
    *,
    sb: str = SB,
    meta: dict[str, str] | None = None,
) -> str:
    segments = [
        f"MSH|^~\\&|DPI-RELAIS|CLINIQUE-RELAIS|RELAIS|RELAIS-PFI|20250101093000||MDM^{trigger}^MDM_T02|{control_id}"
        "|T|2.6|||||FRA|UNICODE UTF-8|||2.1^CISIS_CDA_HL7_V2",
        "EVN||20250101093000",
        PID,
        PV1,
        f"ORC|{orc}",
        f"OBR|1|||{TYPE}",
        f"TXA|1|11488-4|TEXT|20250101093000||||||||{txa12}|{txa13}||||AU",
        f"OBX|1|ED|{TYPE}||^text^XML^Base64^{b64(cda)}||||||{status}",
        sb,
        *metadata(2, "CWE", DMP_ONLY if meta is None else meta),
    ]
    return "\r".join(segments) + "\r"


def oru_delete() -> str:
    """ORU deletion (volet §2: ORC-1 = CA, OBX-11 = D) of the ORU initial document."""
    segments = [
        "MSH|^~\\&|DPI-RELAIS|CLINIQUE-RELAIS|RELAIS|RELAIS-PFI|20250101103000||ORU^R01^ORU_R01|ORU0002"
        "|T|2.5|||||FRA|UNICODE UTF-8|||2.1^CISIS_CDA_HL7_V2",
        PID,
        PV1,
        "ORC|CA",
        f"OBR|1|||{TYPE}",
        f"OBX|1|ED|{TYPE}||^TEXT^XML^Base64^{b64(make_cda(ID_ORU))}||||||D",
        SB,
        *metadata(2, "CE", DMP_ONLY),
    ]
    return "\r".join(segments) + "\r"


def oru_initial() -> str:
    body = "Bonjour, veuillez trouver ci-joint le compte rendu de consultation."
    segments = [
        "MSH|^~\\&|DPI-RELAIS|CLINIQUE-RELAIS|RELAIS|RELAIS-PFI|20250101093000||ORU^R01^ORU_R01|ORU0001"
        "|T|2.5|||||FRA|UNICODE UTF-8|||2.1^CISIS_CDA_HL7_V2",
        PID,
        PV1,
        "ORC|NW",
        f"OBR|1|||{TYPE}",
        f"OBX|1|ED|{TYPE}||^TEXT^XML^Base64^{b64(make_cda(ID_ORU))}||||||F",
        SB,
        "PRT||UC||RCT^Result Copies To^participation|801234567891^CONFRERE^PAUL^^^^^^ASIP-SANTE-PS"
        "&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS||||||||||^^X.400^paul.confrere@test.mssante.fr",
        "PRT||UC||REPLY^Reply To^participation|||||||||||^^X.400^secretariat@test.mssante.fr",
        *metadata(2, "CE", {"DESTDMP": "Y", "DESTMSSANTEPS": "Y", "ACK_RECEPTION": "Y"}),
        f"OBX|12|ED|CORPSMAIL_PS^Corps du mail pour un PS^MetaDMPMSS||^TEXT^^Base64^{b64(body.encode())}||||||F",
    ]
    return "\r".join(segments) + "\r"


ADT_MSH = (
    "MSH|^~\\&|GAM|RELAIS-TEST|RELAIS|RELAIS-TEST|20250101080000||ADT^{trigger}^{structure}|{control_id}"
    "|T|2.5^FRA^2.11|||||FRA|UNICODE UTF-8|FR||2.11^IHE_FRANCE-2.11-PAM"
)
INS_CX = f"{INS}^^^ASIP-SANTE-INS-NIR&{INS_OID}&ISO^INS"
IPP_CX = f"{IPP}^^^RELAIS-TEST&{IPP_OID}&ISO^PI"


def adt(trigger: str, structure: str, control_id: str, *segments: str) -> str:
    msh = ADT_MSH.format(trigger=trigger, structure=structure, control_id=control_id)
    return "\r".join([msh, "EVN||20250101080000||||20250101075500", *segments]) + "\r"


def build() -> dict[str, str]:
    """File name → message text."""
    cda_initial = make_cda(ID_INITIAL)
    cda_replace = make_cda(ID_REPLACE, version=2, parent_id=ID_INITIAL)
    prov_pid = pid(
        "P000124^^^RELAIS-TEST&1.2.250.1.999.1.2&ISO^PI",
        "TESTPROV^ALEX^ALEX^^^^L",
        "19900101",
        "M",
        "75056",
        "PROV",
    )
    a47_pid = pid(
        f'{IPP_CX}~""^^^ASIP-SANTE-INS-NIR&{INS_OID}&ISO^INS',
        PID5,
        "19790328",
        "F",
        "51215",
        "PROV",
        "V000456^^^RELAIS-TEST&1.2.250.1.999.1.3&ISO^AN",
    )
    return {
        "mdm_t02_initial.hl7": mdm("T02", "MDM0001", "NW", "F", ID_INITIAL, "", cda_initial),
        "mdm_t10_replace.hl7": mdm("T10", "MDM0002", "RO", "C", ID_REPLACE, ID_INITIAL, cda_replace),
        "mdm_t04_delete.hl7": mdm("T04", "MDM0003", "CA", "D", ID_REPLACE, "", cda_replace),
        "mdm_t02_secret.hl7": mdm(
            "T02", "MDM0004", "NW", "F", ID_SECRET, "", make_cda(ID_SECRET), sb=SB_FINESS, meta=SECRET
        ),
        "oru_doc_r01_initial.hl7": oru_initial(),
        "oru_doc_r01_delete.hl7": oru_delete(),
        "adt_a01_vali.hl7": adt("A01", "ADT_A01", "ADT0001", PID, PV1),
        "adt_a28_prov.hl7": adt("A28", "ADT_A05", "ADT0002", prov_pid, "PV1|1|N"),
        "adt_a40_merge.hl7": adt(
            "A40", "ADT_A39", "ADT0003", PID, "MRG|P000456^^^RELAIS-TEST&1.2.250.1.999.1.2&ISO^PI"
        ),
        "adt_a47_remove_ins.hl7": adt("A47", "ADT_A30", "ADT0004", a47_pid, f"MRG|{INS_CX}"),
    }


def main(argv: list[str]) -> int:
    check = "--check" in argv
    OUT.mkdir(parents=True, exist_ok=True)
    stale = []
    for name, text in build().items():
        path = OUT / name
        data = text.encode("utf-8")
        if check:
            if not path.exists() or path.read_bytes() != data:
                stale.append(name)
        else:
            path.write_bytes(data)
    if stale:
        print("stale fixtures:", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
