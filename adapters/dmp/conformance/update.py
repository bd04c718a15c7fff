"""ITI-57 Update Document Set as the DMP uses it: TD3.3c deletion and TD3.3d archiving.

Sources:
* ANS PDSM4DMP (ansforge/IG-FHIR-PDSM4DMP-EEDS ``input/pagecontent/index.md``, table
  "Correspondance des transactions DMP ↔ volet PDSm"): TD3.3c "Supprimer un document
  (suppression logique)" = ITI-57 with availabilityStatus
  ``urn:asip:ci-sis:2010:StatusType:Deleted``; TD3.3d archiving = ITI-57 with
  ``urn:asip:ci-sis:2010:StatusType:Archived``; "RMD (ITI-62/86) non utilisé par le DMP".
  ``transaction_td3.3c.md``: the document is identified by its DMP id from TD3.1 (ITI-18).
* IHE ITI Technical Framework Supplement "XDS Metadata Update" (rev. 1.9, 2017; ITI-57
  §3.57.4.1.3, operation "Update DocumentEntry Status"): a SubmissionSet plus an Association
  of type ``urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus`` whose sourceObject is
  the SubmissionSet and targetObject the entryUUID, with Slots ``OriginalStatus`` and
  ``NewStatus``; the registry checks OriginalStatus against the current status and answers
  XDSMetadataUpdateError (the supplement's error code), or the ebRS
  UnresolvedReferenceException for an unknown target.
* ansforge/DRIM-M_DRIMbox ``dmp/xades/request/DeleteRequest.java``: a DMP client sending this
  exact form (action ``urn:ihe:iti:2010:UpdateDocumentSet``, OriginalStatus Approved,
  NewStatus …:Deleted) to the registry endpoint.
"""

from __future__ import annotations

from adapters.dmp.conformance.metadata import KnownEntry, RegistryView
from adapters.dmp.conformance.names import ASSOC, SS, STATUS
from adapters.dmp.conformance.registry_objects import Association, Metadata, RegistryObject
from adapters.dmp.conformance.violation import Rule, Violation

__all__ = ["StatusChange", "check_update"]

_TF = "IHE ITI Suppl. XDS Metadata Update rev 1.9, ITI-57 §3.57.4.1.3 (Update DocumentEntry Status)"
_P4D = "ANS PDSM4DMP index.md (TD3.3c …:Deleted, TD3.3d …:Archived)"

ASSOCIATION = Rule(
    "U57-ASSOC-01",
    "each update is an UpdateAvailabilityStatus association from the SubmissionSet to an entryUUID, "
    "with one OriginalStatus and one NewStatus slot",
    _TF,
    "XDSMetadataUpdateError",
)
NEW_STATUS = Rule(
    "U57-STATUS-01",
    "NewStatus is urn:asip:ci-sis:2010:StatusType:Deleted (TD3.3c) or …:Archived (TD3.3d), or Approved "
    "to unarchive",
    _P4D,
    "XDSMetadataUpdateError",
)
TARGET = Rule(
    "U57-TARGET-01",
    "the target entry exists, belongs to the submission's patient and is in OriginalStatus (Approved to "
    "delete or archive)",
    f"{_TF}; {_P4D}",
    "UnresolvedReferenceException",
)
ONLY = Rule(
    "U57-ONLY-01",
    "a DMP deletion/archiving request carries no new DocumentEntry",
    f"{_P4D} (TD3.3c/d are metadata updates only)",
    "XDSMetadataUpdateError",
)

_ALLOWED = {
    STATUS.DELETED: {STATUS.APPROVED},
    STATUS.ARCHIVED: {STATUS.APPROVED},
    STATUS.APPROVED: {STATUS.ARCHIVED},
}


class StatusChange:
    """One accepted availability change."""

    def __init__(self, entry_uuid: str, original: str, new: str) -> None:
        self.entry_uuid = entry_uuid
        self.original = original
        self.new = new


def check_update(metadata: Metadata, registry: RegistryView) -> tuple[list[Violation], list[StatusChange]]:
    """Rules of an ITI-57 request (its lcm:SubmitObjectsRequest body is checked by the caller).

    The changes are only meaningful when no violation is returned.
    """
    found: list[Violation] = []
    changes: list[StatusChange] = []
    ss = metadata.submission_set
    if metadata.entries:
        found.append(ONLY(f"{len(metadata.entries)} DocumentEntry objects in an availability update"))
    updates = [a for a in metadata.associations if a.type == ASSOC.UPDATE_AVAILABILITY]
    if not updates:
        found.append(ASSOCIATION("no UpdateAvailabilityStatus association"))
    for association in updates:
        problems, change = _check_status_update(association, ss, registry)
        found += problems
        if change is not None:
            changes.append(change)
    return found, changes


def _check_status_update(
    association: Association, ss: RegistryObject | None, registry: RegistryView
) -> tuple[list[Violation], StatusChange | None]:
    """One UpdateAvailabilityStatus association: its form (U57-ASSOC-01, U57-STATUS-01), then its target."""
    found: list[Violation] = []
    original = association.slots.get("OriginalStatus", [])
    new = association.slots.get("NewStatus", [])
    if ss is None or association.source != ss.id:
        found.append(ASSOCIATION(f"association {association.id} does not start at the SubmissionSet"))
    if len(original) != 1 or len(new) != 1:
        found.append(ASSOCIATION(f"association {association.id} needs one OriginalStatus and one NewStatus"))
        return found, None
    if new[0] not in _ALLOWED:
        found.append(NEW_STATUS(f"NewStatus {new[0]!r} is not a DMP availability status"))
        return found, None
    target = registry.entry(association.target)
    if target is None:
        found.append(TARGET(f"entry {association.target} is not registered"))
        return found, None
    patient = ss.external_ids.get(SS.PATIENT_ID) if ss is not None else None
    found += _target_checks(target, original[0], new[0], patient)
    return found, StatusChange(association.target, original[0], new[0])


def _target_checks(target: KnownEntry, original: str, new: str, patient: str | None) -> list[Violation]:
    """U57-TARGET-01: the entry is the patient's, in OriginalStatus, and may become NewStatus.

    The registry answers XDSMetadataUpdateError on a status mismatch (Metadata Update §3.57.4.1.3).
    """
    found: list[Violation] = []
    if patient and target.patient_id != patient:
        found.append(
            Violation(
                TARGET.code,
                "the target entry belongs to another patient",
                TARGET.reference,
                "XDSPatientIdDoesNotMatch",
            )
        )
    if target.status != original:
        found.append(
            Violation(
                TARGET.code,
                f"OriginalStatus {original} but the entry is {target.status}",
                TARGET.reference,
                "XDSMetadataUpdateError",
            )
        )
    elif target.status not in _ALLOWED[new]:
        found.append(
            Violation(
                TARGET.code,
                f"an entry {target.status} cannot become {new}",
                TARGET.reference,
                "XDSMetadataUpdateError",
            )
        )
    return found
