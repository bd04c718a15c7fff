"""The requested action — submit, replace or delete — and whether the message says it consistently.

ORC-1, the OBX-11 of every document OBX and (MDM) the trigger event must agree (volet §2):
NW / F / T02 is a submission, RO / C / T10 a replacement, CA / D / T04 a deletion. When
they disagree the action is undetermined (None) and ``DOC_ACTION_INCONSISTENT`` says
where. A volet v2.0 message has no ORC: the trigger and OBX-11 decide alone.
"""

from __future__ import annotations

from typing import NamedTuple

from gateway.core.hl7v2.documents.message import EmbeddedDocument
from gateway.core.hl7v2.reader import Segment
from gateway.model import DocumentAction, Finding

__all__ = ["ExpectedAction", "MDM_TRIGGERS", "decide_action"]


class ExpectedAction(NamedTuple):
    """What ORC-1 and OBX-11 must say for an action."""

    order_control: str  # ORC-1
    result_status: str  # OBX-11
    action: DocumentAction


_SUBMIT = ExpectedAction("NW", "F", "submit")
_REPLACE = ExpectedAction("RO", "C", "replace")
_DELETE = ExpectedAction("CA", "D", "delete")
#: MDM trigger → what ORC-1 and OBX-11 must say.
MDM_TRIGGERS: dict[str, ExpectedAction] = {"T02": _SUBMIT, "T10": _REPLACE, "T04": _DELETE}
# ORU R01 is driven by ORC-1 alone, and without ORC (volet v2.0) by OBX-11 alone.
_ORU_BY_ORC: dict[str, ExpectedAction] = {e.order_control: e for e in (_SUBMIT, _REPLACE, _DELETE)}
_BY_STATUS: dict[str, DocumentAction] = {e.result_status: e.action for e in (_SUBMIT, _REPLACE, _DELETE)}


def decide_action(
    code: str,
    trigger: str,
    orcs: list[Segment],
    documents: list[EmbeddedDocument],
    findings: list[Finding],
    *,
    orc_required: bool = True,
) -> DocumentAction | None:
    """The action ORC-1, OBX-11 and the trigger agree on; None (with findings) when they do not."""
    if not orcs and not orc_required:
        return _action_without_orc(code, trigger, documents, findings)
    if not orcs:
        findings.append(Finding("ORC_MISSING", "ORC segment is missing (ORC-1 carries NW / RO / CA)", "ORC"))
        if code == "ORU":
            return None
    orc1 = orcs[0][1].value(1).strip() if orcs else ""
    expected = _expected(code, trigger, orc1, findings)
    if expected is None:
        return None
    # Both checks run: each disagreement is reported.
    orcs_agree = _orcs_agree(orcs, orc1, trigger, expected, documents, findings)
    statuses_agree = _statuses_agree(orc1, trigger, expected, documents, findings)
    return expected.action if orcs and orcs_agree and statuses_agree else None


def _expected(code: str, trigger: str, orc1: str, findings: list[Finding]) -> ExpectedAction | None:
    """MDM: what the trigger implies; ORU: what ORC-1 says, when it is NW, RO or CA."""
    if code == "MDM":
        return MDM_TRIGGERS[trigger]
    if orc1 in _ORU_BY_ORC:
        return _ORU_BY_ORC[orc1]
    findings.append(
        Finding(
            "DOC_ACTION_INCONSISTENT",
            f"ORC-1 '{orc1}' is not NW, RO or CA; with MSH-9.2 '{trigger}' the action is undetermined",
            "ORC-1",
        )
    )
    return None


def _orcs_agree(
    orcs: list[Segment],
    orc1: str,
    trigger: str,
    expected: ExpectedAction,
    documents: list[EmbeddedDocument],
    findings: list[Finding],
) -> bool:
    """The first ORC-1 is the expected one and every later ORC repeats it."""
    agree = True
    if orcs and orc1 != expected.order_control:
        agree = False
        status = documents[0].result_status if documents else ""
        findings.append(
            Finding(
                "DOC_ACTION_INCONSISTENT",
                f"ORC-1 '{orc1}', OBX-11 '{status}' and MSH-9.2 '{trigger}' disagree "
                f"(expected ORC-1 {expected.order_control} and OBX-11 {expected.result_status})",
                "ORC-1",
            )
        )
    for extra in orcs[1:]:
        other = extra[1].value(1).strip()
        if other != orc1:
            agree = False
            findings.append(
                Finding(
                    "DOC_ACTION_INCONSISTENT",
                    f"ORC-1 '{other}' of a later ORC differs from the first ORC-1 '{orc1}'",
                    "ORC-1",
                )
            )
    return agree


def _statuses_agree(
    orc1: str, trigger: str, expected: ExpectedAction, documents: list[EmbeddedDocument], findings: list[Finding]
) -> bool:
    """Every document OBX-11 is the expected one."""
    agree = True
    for doc in documents:
        if doc.result_status != expected.result_status:
            agree = False
            findings.append(
                Finding(
                    "DOC_ACTION_INCONSISTENT",
                    f"ORC-1 '{orc1}', OBX-11 '{doc.result_status}' and MSH-9.2 '{trigger}' disagree "
                    f"(expected ORC-1 {expected.order_control} and OBX-11 {expected.result_status})",
                    f"OBX[{doc.obx_index}]-11",
                )
            )
    return agree


def _action_without_orc(
    code: str, trigger: str, documents: list[EmbeddedDocument], findings: list[Finding]
) -> DocumentAction | None:
    """Volet v2.0 (no ORC): the MDM trigger and OBX-11 must agree; for ORU, OBX-11 alone decides."""
    statuses = {doc.result_status for doc in documents}
    if code == "MDM":
        expected = MDM_TRIGGERS[trigger]
        for doc in documents:
            if doc.result_status != expected.result_status:
                findings.append(
                    Finding(
                        "DOC_ACTION_INCONSISTENT",
                        f"OBX-11 '{doc.result_status}' and MSH-9.2 '{trigger}' disagree "
                        f"(expected OBX-11 {expected.result_status})",
                        f"OBX[{doc.obx_index}]-11",
                    )
                )
                return None
        return expected.action
    if len(statuses) != 1 or next(iter(statuses)) not in _BY_STATUS:
        findings.append(
            Finding(
                "DOC_ACTION_INCONSISTENT",
                f"OBX-11 {'/'.join(sorted(statuses)) or '(empty)'}: without ORC (volet v2.0) OBX-11 must be "
                "F, C or D for every document",
                f"OBX[{documents[0].obx_index}]-11" if documents else "OBX-11",
            )
        )
        return None
    return _BY_STATUS[next(iter(statuses))]
