"""HL7 v2.5 ch. 2 §2.9: which acknowledgements a message gets (gateway.core.ackmode)."""

from __future__ import annotations

import pytest

from gateway.core.ackmode import plan_acks


def test_original_mode_when_msh15_and_msh16_are_empty() -> None:
    for code in ("AA", "AE", "AR"):
        plan = plan_acks("", "  ", code, commit_reject=False)
        assert (plan.enhanced, plan.immediate, plan.application) == (False, code, False)


@pytest.mark.parametrize(
    ("msh15", "msh16", "code", "commit_reject", "immediate", "application"),
    [
        ("AL", "AL", "AA", False, "CA", True),
        ("AL", "AL", "AE", False, "CA", True),  # stored: the commit is accepted, the error travels later
        ("AL", "AL", "AR", True, "CR", False),  # MSH-9/11/12 refused: nothing to process afterwards
        ("NE", "NE", "AA", False, None, False),
        ("NE", "AL", "AA", False, None, True),
        ("ER", "ER", "AA", False, None, False),
        ("ER", "ER", "AE", False, None, True),
        ("ER", "AL", "AR", True, "CR", False),
        ("SU", "SU", "AA", False, "CA", True),
        ("SU", "SU", "AE", False, "CA", False),
        ("al ", "", "AA", False, "CA", True),  # trimmed, case-folded; the empty one reads AL
        ("", "NE", "AA", False, "CA", False),
        ("XX", "NE", "AA", False, "CA", False),  # a value outside table 0155 reads AL
    ],
)
def test_enhanced_mode(msh15: str, msh16: str, code: str, commit_reject: bool, immediate: str | None,
                       application: bool) -> None:
    plan = plan_acks(msh15, msh16, code, commit_reject=commit_reject)
    assert plan.enhanced
    assert (plan.immediate, plan.application) == (immediate, application)
