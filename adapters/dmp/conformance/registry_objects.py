"""ebRIM 3.0 registry objects of a request, read into plain values.

References: OASIS ebRIM 3.0 §2-4 (RegistryObject, Slot, Classification, ExternalIdentifier,
Association, RegistryPackage, ExtrinsicObject); IHE ITI TF-3 §4.2.3 (how XDS attributes map
onto them: coded values are Classifications with ``nodeRepresentation`` = code and a
``codingScheme`` Slot; identifiers are ExternalIdentifiers; authors are Classifications
with authorPerson/authorInstitution/authorRole/authorSpecialty Slots) and §4.2.5 (UUIDs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from adapters.dmp.conformance.names import DE, NS, SS

__all__ = ["Coded", "Author", "RegistryObject", "Association", "Metadata", "read_metadata"]

RIM = NS["rim"]


@dataclass(frozen=True)
class Coded:
    """A coded XDS attribute."""

    code: str
    scheme: str
    display: str


@dataclass
class Author:
    """One author Classification."""

    person: list[str] = field(default_factory=list)
    institutions: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    specialties: list[str] = field(default_factory=list)


@dataclass
class RegistryObject:
    """A DocumentEntry or SubmissionSet (or Folder) with its attributes."""

    element: etree._Element
    id: str
    kind: str
    slots: dict[str, list[str]] = field(default_factory=dict)
    external_ids: dict[str, str] = field(default_factory=dict)
    codes: dict[str, list[Coded]] = field(default_factory=dict)
    authors: list[Author] = field(default_factory=list)
    title: str | None = None

    def slot(self, name: str) -> str | None:
        """The first value of Slot ``name``, or None."""
        values = self.slots.get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class Association:
    """An ebRIM Association with its slots."""

    id: str
    type: str
    source: str
    target: str
    slots: dict[str, list[str]]
    status: str | None


@dataclass
class Metadata:
    """All registry objects of one SubmitObjectsRequest."""

    submission_sets: list[RegistryObject] = field(default_factory=list)
    entries: list[RegistryObject] = field(default_factory=list)
    folders: list[RegistryObject] = field(default_factory=list)
    associations: list[Association] = field(default_factory=list)

    @property
    def submission_set(self) -> RegistryObject | None:
        """The SubmissionSet when there is exactly one."""
        return self.submission_sets[0] if len(self.submission_sets) == 1 else None


def _slots(element: etree._Element) -> dict[str, list[str]]:
    slots: dict[str, list[str]] = {}
    for slot in element.findall(f"{{{RIM}}}Slot"):
        values = [(v.text or "").strip() for v in slot.iter(f"{{{RIM}}}Value")]
        slots.setdefault(slot.get("name", ""), []).extend(values)
    return slots


def _name(element: etree._Element) -> str | None:
    localized = element.find(f"{{{RIM}}}Name/{{{RIM}}}LocalizedString")
    return localized.get("value") if localized is not None else None


def _fill(obj: RegistryObject, author_scheme: str, classifications: list[etree._Element]) -> None:
    obj.slots = _slots(obj.element)
    obj.title = _name(obj.element)
    for ei in obj.element.findall(f"{{{RIM}}}ExternalIdentifier"):
        obj.external_ids[ei.get("identificationScheme", "")] = ei.get("value", "")
    for cl in classifications:
        scheme = cl.get("classificationScheme")
        if scheme is None:
            continue
        slots = _slots(cl)
        if scheme == author_scheme:
            obj.authors.append(
                Author(
                    slots.get("authorPerson", []),
                    slots.get("authorInstitution", []),
                    slots.get("authorRole", []),
                    slots.get("authorSpecialty", []),
                )
            )
            continue
        coding = slots.get("codingScheme", [""])
        obj.codes.setdefault(scheme, []).append(
            Coded(cl.get("nodeRepresentation", ""), coding[0] if coding else "", _name(cl) or "")
        )


def read_metadata(registry_object_list: etree._Element | None) -> Metadata:
    """Read a ``rim:RegistryObjectList`` (classifications may be nested or top level)."""
    metadata = Metadata()
    if registry_object_list is None:
        return metadata
    loose: dict[str, list[etree._Element]] = {}
    for cl in registry_object_list.findall(f"{{{RIM}}}Classification"):
        loose.setdefault(cl.get("classifiedObject", ""), []).append(cl)
    for element in registry_object_list:
        if not isinstance(element.tag, str):
            continue
        local = etree.QName(element).localname
        if etree.QName(element).namespace != RIM:
            continue
        obj_id = element.get("id", "")
        nested = element.findall(f"{{{RIM}}}Classification")
        classifications = nested + loose.get(obj_id, [])
        if local == "ExtrinsicObject":
            entry = RegistryObject(element, obj_id, "DocumentEntry")
            _fill(entry, DE.AUTHOR, classifications)
            metadata.entries.append(entry)
        elif local == "RegistryPackage":
            nodes = {c.get("classificationNode") for c in classifications}
            kind = "SubmissionSet" if SS.NODE in nodes else "Folder"
            package = RegistryObject(element, obj_id, kind)
            _fill(package, SS.AUTHOR, classifications)
            (metadata.submission_sets if kind == "SubmissionSet" else metadata.folders).append(package)
        elif local == "Association":
            metadata.associations.append(
                Association(
                    obj_id,
                    element.get("associationType", ""),
                    element.get("sourceObject", ""),
                    element.get("targetObject", ""),
                    _slots(element),
                    element.get("status"),
                )
            )
    return metadata
