"""The ``file`` destination: write what would have been sent into a directory, durably.

Layout, one directory per delivery::

    <directory>/<exchange_id>/<delivery_id>/
        document.xml          the CDA bytes as received            (document payloads)
        iti65-bundle.json     the PDSm ITI-65 transaction Bundle    (when payload.fhir)
        xds-metadata.json     the XDS metadata JSON                 (when payload.xds)
        iti41-envelope.xml    the ITI-41 SOAP envelope              (submission / replacement)
        iti57-envelope.xml    the ITI-57 SOAP envelope              (deletion / archiving)
        zam.hl7               the HL7 v2 business acknowledgement   (zam payloads)
        done.json             written last: the delivery is complete

Every file is written atomically (temporary file, fsync, ``os.replace``, fsync of the
directory), and ``done.json`` only after all the others, so ``already_delivered`` — does
``done.json`` exist? — is true exactly when a previous attempt finished. A crash before
that leaves a partial directory that the next attempt simply overwrites.

File I/O runs in a worker thread (``asyncio.to_thread``) so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from adapters.base import BaseDestination, RetrySettings, Sleep
from gateway.errors import DestinationRejected, DestinationUnavailable
from gateway.ports import Clock, Payload, SendResult
from gateway.settings import DestinationSettings, Settings

__all__ = ["DONE_MARKER", "FileDestination", "Renderer", "atomic_write", "destination_from_settings"]

log = structlog.get_logger(__name__)

DONE_MARKER = "done.json"

#: builds the ITI-41 SOAP envelope (bytes) for a document payload
Renderer = Callable[[Payload], bytes]

# Ids become path components: refuse anything that could climb out of the directory.
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def _fsync_dir(path: Path) -> None:
    """Make a rename or a creation inside ``path`` durable (POSIX only; a no-op elsewhere)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(directory: Path, name: str, data: bytes, *, sync_dir: bool = True) -> Path:
    """Write ``directory/name`` so that readers see the old file or the whole new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        target = directory / name
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync_dir:
        _fsync_dir(directory)
    return target


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def _default_renderer() -> Renderer | None:
    """An ITI-41 renderer built from ``adapters.dmp``'s pure builders, if that adapter is importable.

    The archive copy is the SOAP envelope with the document inlined (the XOP infoset) and
    no VIHF: the assertion is a short-lived signed token, meaningless in a file. An RPLC
    association needs the replaced entryUUID from the registry, so it is absent here.
    """
    try:
        from lxml import etree

        from adapters.dmp.ebrim import (
            STATUS_APPROVED,
            STATUS_ARCHIVED,
            STATUS_DELETED,
            build_provide_and_register,
            build_update_availability_status,
            inline_documents,
        )
        from adapters.dmp.soap import ACTION_ITI41, ACTION_ITI57, build_envelope
    except ImportError:
        return None

    def render(payload: Payload) -> bytes:
        if payload.xds is None:
            raise ValueError("no XDS metadata")
        # Derived from the delivery, so a re-delivery rewrites identical bytes.
        message_id = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'relais:{payload.exchange_id}/{payload.delivery_id}')}"
        action = payload.xds["documentEntry"].get("action")
        if action in ("delete", "archive"):
            # TD3.3c / TD3.3d are ITI-57 status updates, never an ITI-41. The target must be
            # the registry's entryUUID, which only an ITI-18 can tell: the file copy names
            # the entry by its uniqueId instead, for whoever replays it to resolve.
            update = build_update_availability_status(
                payload.xds,
                target_entry_uuid=payload.xds["documentEntry"].get("uniqueId", ""),
                original_status=STATUS_APPROVED,
                new_status=STATUS_DELETED if action == "delete" else STATUS_ARCHIVED,
            )
            envelope = build_envelope(update, action=ACTION_ITI57, message_id=message_id)
            return bytes(etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"))
        cid = f"document-{payload.delivery_id}@relais"
        request = build_provide_and_register(payload.xds, document_id_ref=cid)
        if payload.document is not None:
            request = inline_documents(request, {cid: payload.document})
        envelope = build_envelope(request, action=ACTION_ITI41, message_id=message_id)
        return bytes(etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"))

    return render


_UNSET: Any = object()


class FileDestination(BaseDestination):
    """Write each delivery under ``<directory>/<exchange_id>/<delivery_id>/``."""

    kind = "file"

    def __init__(
        self,
        name: str,
        directory: str | Path,
        *,
        render_iti41: Renderer | None = _UNSET,
        retry: RetrySettings | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        super().__init__(name, retry=retry, sleep=sleep)
        self.directory = Path(directory)
        self._render_iti41 = _default_renderer() if render_iti41 is _UNSET else render_iti41

    def delivery_dir(self, payload: Payload) -> Path:
        """Where ``payload`` goes; rejects ids that are not plain path components."""
        for label, value in (("exchange_id", payload.exchange_id), ("delivery_id", payload.delivery_id)):
            if not _SAFE_ID.match(value) or value in (".", ".."):
                raise DestinationRejected(f"{label} cannot be used as a directory name", code="FILE_BAD_ID")
        return self.directory / payload.exchange_id / payload.delivery_id

    def _files(self, payload: Payload) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
        """``[(file name, bytes)]`` to write, and ``{file name: why skipped}``."""
        files: list[tuple[str, bytes]] = []
        skipped: dict[str, str] = {}
        if payload.kind == "zam":
            if payload.hl7 is None:
                raise DestinationRejected("zam payload without an HL7 message", code="FILE_EMPTY_PAYLOAD")
            return [("zam.hl7", payload.hl7)], skipped
        if payload.fhir is not None:
            files.append(("iti65-bundle.json", _json_bytes(payload.fhir)))
        if payload.xds is not None:
            files.append(("xds-metadata.json", _json_bytes(payload.xds)))
            action = payload.xds["documentEntry"].get("action")
            envelope_name = "iti57-envelope.xml" if action in ("delete", "archive") else "iti41-envelope.xml"
            if self._render_iti41 is None:
                skipped[envelope_name] = "no SOAP renderer available"
            else:
                try:
                    files.append((envelope_name, self._render_iti41(payload)))
                except Exception as exc:  # the archive copy must not fail on an optional rendering
                    # The exception text may quote patient data: keep its type and code only.
                    code = getattr(exc, "code", None)
                    skipped[envelope_name] = (
                        f"{type(exc).__name__} {code}" if code else type(exc).__name__
                    )
        if payload.document is not None:
            files.append(("document.xml", payload.document))
        if not files:
            raise DestinationRejected("document payload has nothing to write", code="FILE_EMPTY_PAYLOAD")
        return files, skipped

    def _write(
        self, target: Path, payload: Payload, files: list[tuple[str, bytes]], skipped: dict[str, str]
    ) -> None:
        """Blocking part, run in a worker thread."""
        created = [p for p in (self.directory, target.parent, target) if not p.exists()]
        target.mkdir(parents=True, exist_ok=True)
        for path in created:  # make the new directory entries themselves durable
            _fsync_dir(path.parent)
        for stale in target.glob(".*.tmp"):  # left by an attempt that crashed mid-write
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        for name, data in files:
            atomic_write(target, name, data, sync_dir=False)
        _fsync_dir(target)
        marker = {
            "exchange_id": payload.exchange_id,
            "delivery_id": payload.delivery_id,
            "kind": payload.kind,
            "files": [
                {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                for name, data in files
            ],
            "skipped": skipped,
        }
        atomic_write(target, DONE_MARKER, _json_bytes(marker))

    async def _send(self, payload: Payload) -> SendResult:
        target = self.delivery_dir(payload)
        # rendering serialises the document again (JSON, SOAP with the CDA inline): for a 10 MiB
        # CDA that held the event loop for a few hundred milliseconds
        files, skipped = await asyncio.to_thread(self._files, payload)
        try:
            await asyncio.to_thread(self._write, target, payload, files, skipped)
        except OSError as exc:
            # Disk full, permissions, a vanished mount: an operator can fix it, so retry later.
            raise DestinationUnavailable(f"cannot write: {type(exc).__name__}", code="FILE_IO") from exc
        if skipped:
            log.info(
                "file.skipped", destination=self.name, delivery_id=payload.delivery_id, files=sorted(skipped)
            )
        return SendResult(
            remote_id=str(target),
            detail={"files": [name for name, _ in files], "skipped": skipped},
        )

    async def _lookup(self, payload: Payload) -> bool:
        marker = self.delivery_dir(payload) / DONE_MARKER
        return await asyncio.to_thread(marker.is_file)


def destination_from_settings(d: DestinationSettings, settings: Settings, clock: Clock) -> FileDestination:
    """A ``kind = "file"`` table: ``directory`` (default ``<data_dir>/outbox/<name>``)."""
    directory = d.directory or str(settings.data_dir / "outbox" / d.name)
    return FileDestination(d.name, directory, retry=RetrySettings.from_settings(settings))
