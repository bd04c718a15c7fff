"""The real clock's ids are version-4 UUIDs in their canonical text form."""

from __future__ import annotations

import uuid

from gateway.ports import SystemClock


def test_new_ids_are_random_version_4_uuids() -> None:
    clock = SystemClock()
    ids = {clock.new_id() for _ in range(2000)}
    assert len(ids) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # canonical: lower case, 8-4-4-4-12
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
