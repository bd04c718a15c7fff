"""One ``relais serve`` per embedded journal.

SQLite's own locking keeps the file consistent with several processes, but two gateways
on one data directory would each run a dispatcher over the same queue, each sure it is
the only writer (the SQLite journal claims work without row locks because it is). So
``serve`` takes an exclusive ``flock`` on ``journal.db.lock`` beside the journal and keeps
it for its lifetime; the kernel drops it when the process ends, however it ends (a
SIGKILL leaves no stale lock to clean up). The file says who holds it, so the refusal
can name the running instance. Command-line tools do not take it: they are short
transactions that SQLite serialises with the server's.

A local file lock means nothing on a network file system shared by two machines: several
instances belong on PostgreSQL, which has its own claims and leases.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.errors import JournalError

__all__ = ["InstanceLock"]


class InstanceLock:
    def __init__(self, journal_path: str | Path) -> None:
        self.path = Path(f"{journal_path}.lock")
        self._fd: int | None = None
        self._since = ""

    def acquire(self, **about: Any) -> None:
        """Hold the lock or raise ``JournalError(JOURNAL_IN_USE)`` naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read(fd))
            os.close(fd)
            raise JournalError(
                f"journal {str(self.path)[:-5]} is in use by another relais serve ({holder}); "
                "stop it, or give this one its own data directory (several instances share a PostgreSQL journal)",
                code="JOURNAL_IN_USE",
            ) from None
        self._fd = fd
        self._since = datetime.now(UTC).isoformat(timespec="seconds")
        self.update(**about)

    def update(self, **about: Any) -> None:
        """Rewrite what the lock file says about us (addresses are known once the listeners are up)."""
        if self._fd is None:
            return
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": self._since, **about}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(record).encode("utf-8"), 0)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def _read(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0)
        value = json.loads(data.decode("utf-8")) if data else {}
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _describe(record: dict[str, Any]) -> str:
    if not record:
        return "a process that has not said who it is yet"
    parts = [f"pid {record.get('pid')} on {record.get('host')}"]
    if record.get("since"):
        parts.append(f"since {record['since']}")
    for key in ("mllp", "http"):
        if record.get(key):
            parts.append(f"{key} {record[key]}")
    return ", ".join(parts)
