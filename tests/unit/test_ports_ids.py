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


def test_ids_are_unique_across_threads_and_after_a_fork() -> None:
    import os
    from concurrent.futures import ThreadPoolExecutor

    clock = SystemClock()
    with ThreadPoolExecutor(4) as pool:
        ids = [i for chunk in pool.map(lambda _: [clock.new_id() for _ in range(1000)], range(4)) for i in chunk]
    assert len(set(ids)) == 4000
    clock.new_id()  # the buffer is part-used when the process forks
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id must not be the parent's next one
        os.write(write, clock.new_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert child != clock.new_id()
