"""A CDA whose author is software (assignedAuthoringDevice): ActorSystem in XDS, Device in FHIR."""

from __future__ import annotations

import itertools
import re
import uuid
from datetime import UTC, datetime

from gateway.core.pipeline import Ids, PipelineOptions, analyse_cda
from tests.support import FIXTURES

DEVICE_AUTHOR = b"""<author><time value="20240315142500+0100"/><assignedAuthor>
<id root="1.2.250.1.999.7" extension="AUTO-1"/>
<assignedAuthoringDevice><manufacturerModelName>XN-1000</manufacturerModelName>
<softwareName>AUTOMATE-BIO</softwareName></assignedAuthoringDevice>
<representedOrganization><id root="1.2.250.1.71.4.2.2" extension="3750999999"/><name>HOPITAL FICTIF RELAIS</name>
</representedOrganization></assignedAuthor></author>"""


def test_device_author_is_an_actor_system_and_a_fhir_device() -> None:
    data = (FIXTURES / "cda" / "cr_imagerie_n1.xml").read_bytes()
    data = re.sub(rb"<author>.*?</author>", DEVICE_AUTHOR, data, count=1, flags=re.S)
    counter = itertools.count(1)
    ids = Ids(now=datetime(2025, 1, 1, tzinfo=UTC), new_uuid=lambda: str(uuid.UUID(int=next(counter))))
    an = analyse_cda(data, {"DESTDMP": True}, PipelineOptions(allow_test_ins=True), ids)
    assert an.errors == []
    (doc,) = an.documents
    (author,) = doc.xds["documentEntry"]["authors"]
    assert author["authorPerson"] == "AUTO-1^AUTOMATE-BIO^XN-1000^^^^^^&1.2.250.1.71.4.2.1&ISO^U^^^RI"
    assert doc.fhir is not None
    (reference,) = [e["resource"] for e in doc.fhir["entry"] if e["resource"]["resourceType"] == "DocumentReference"]
    (pointer,) = reference["author"]
    device = next(r for r in reference["contained"] if f"#{r['id']}" == pointer["reference"])
    assert device["resourceType"] == "Device"
    assert {n["name"] for n in device["deviceName"]} == {"AUTOMATE-BIO", "XN-1000"}
    assert not any(r["resourceType"] == "Practitioner" and not r.get("name") for r in reference["contained"])
