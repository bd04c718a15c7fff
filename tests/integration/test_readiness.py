"""/readyz reflects whether the journal can commit (issue 10, break 7).

The full disk is real: a 16 MiB tmpfs mounted for the test (root only; skipped with
a reason elsewhere), filled with a file until ENOSPC.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests import builders
from tests.support import running


@contextlib.contextmanager
def tiny_disk(path: Path, size: str = "16m") -> Iterator[Path]:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to simulate a full disk: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> Path:
    filler = path / "filler"
    # unbuffered: a buffered file keeps the part of a chunk that did not fit and raises ENOSPC
    # again on close (it did, once the free space stopped being a multiple of the chunk)
    with open(filler, "wb", buffering=0) as fh:
        chunk = b"\0" * 65536
        try:
            while True:
                fh.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


async def _readyz(service) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as session, session.get(f"{service.addresses['http']}/readyz") as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize(("min_free", "check", "verdict"), [(256 * 1024, "disk", "full"),
                                                          (0, "journal", "error: JOURNAL_COMMIT")])
async def test_readyz_is_503_on_a_full_disk_and_200_again_once_freed(
    tmp_path: Path, min_free: int, check: str, verdict: str
) -> None:
    with tiny_disk(tmp_path / "disk") as disk:
        settings = builders.settings(
            tmp_path, gateway={"data_dir": str(disk / "data")},
            journal={"min_free_bytes": min_free, "ready_probe_seconds": 0.0},
        )
        async with running(settings) as service:
            status, body = await _readyz(service)
            assert status == 200, body
            filler = fill(disk)
            status, body = await _readyz(service)
            assert status == 503 and body["status"] == "unavailable", body
            assert body["checks"][check] == verdict  # free space, or the probe commit itself
            os.unlink(filler)
            status, body = await _readyz(service)
            assert status == 200, body


async def test_readyz_is_503_when_the_journal_cannot_commit(tmp_path: Path) -> None:
    async with running(builders.settings(tmp_path, journal={"ready_probe_seconds": 0.0})) as service:
        assert (await _readyz(service))[0] == 200
        await service.journal.close()  # the writer is gone: nothing can be committed any more
        status, body = await _readyz(service)
        assert status == 503 and body["checks"]["journal"].startswith("error"), body
