"""``relais send FILE… --to HOST:PORT``: push HL7 v2 files over MLLP and report each ACK."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path
from typing import Any

from gateway.commands._common import dump_json

__all__ = ["register", "normalise_segments"]

_NEWLINES = re.compile(rb"\r\n|\n|\r")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("send", help="send HL7 v2 files over MLLP (one message per file)")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--to", required=True, metavar="HOST:PORT")
    p.add_argument("--json", action="store_true")
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(func=run)


def normalise_segments(data: bytes) -> bytes:
    """LF and CRLF become CR (the HL7 segment terminator); trailing blank lines go."""
    lines = [line for line in _NEWLINES.split(data) if line.strip()]
    return b"\r".join(lines) + b"\r"


def _field(segment: bytes, sep: bytes, index: int) -> str:
    parts = segment.split(sep)
    return parts[index].decode("latin-1") if len(parts) > index else ""


def _read_ack(ack: bytes) -> dict[str, str]:
    segs = _NEWLINES.split(ack)
    msh = next((s for s in segs if s.startswith(b"MSH")), b"")
    sep = msh[3:4] or b"|"
    msa = next((s for s in segs if s.startswith(b"MSA")), b"")
    err = next((s for s in segs if s.startswith(b"ERR")), b"")
    return {
        "msa1": _field(msa, sep, 1),
        "msa2": _field(msa, sep, 2),
        "text": _field(msa, sep, 3) or _field(err, sep, 8) or _field(err, sep, 5),
    }


def _expects_no_reply(msh: bytes, sep: bytes) -> bool:
    """HL7 v2.5 ch. 2: an ACK is never acknowledged; enhanced mode with MSH-15 NE gets no accept ACK."""
    if not msh.startswith(b"MSH"):
        return False
    msh9 = _field(msh, sep, 8)
    component = msh[4:5].decode("latin-1") or "^"
    return msh9.split(component)[0].strip() == "ACK" or _field(msh, sep, 14).strip().upper() == "NE"


async def _send_all(files: list[str], host: str, port: int, wait: float, progress: bool) -> list[dict[str, Any]]:
    from gateway.mllp_client import MllpClient

    results: list[dict[str, Any]] = []
    async with MllpClient(host, port, timeout=wait) as client:
        for n, name in enumerate(files, start=1):
            data = normalise_segments(Path(name).read_bytes())  # noqa: ASYNC240 - small local files
            first = data.split(b"\r", 1)[0]
            sep = first[3:4] or b"|"
            control_id = _field(first, sep, 9) if first.startswith(b"MSH") else ""
            try:
                if _expects_no_reply(first, sep):
                    await client.post(data)
                    info = {"msa1": "", "msa2": "", "text": "sent; no acknowledgement is due", "no_reply": "1"}
                else:
                    ack = await client.send(data)
                    info = _read_ack(ack)
            except Exception as exc:  # report and go on with the next file
                info = {"msa1": "", "msa2": "", "text": f"no acknowledgement: {type(exc).__name__}"}
            results.append({"file": name, "control_id": control_id, **info})
            if progress:
                width = 30
                done = int(width * n / len(files))
                sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {n}/{len(files)}")
                sys.stderr.flush()
    if progress:
        sys.stderr.write("\n")
    return results


def run(args: argparse.Namespace) -> int:
    host, _, port = args.to.rpartition(":")
    if not host or not port.isdigit():
        print("--to must be HOST:PORT", file=sys.stderr)
        return 2
    progress = len(args.files) > 5 and sys.stderr.isatty()
    results = asyncio.run(_send_all(args.files, host, int(port), args.timeout, progress))
    if args.json:
        dump_json(results)
    else:
        for r in results:
            print(f"{r['control_id'] or '-':<16} {r['msa1'] or '--':<3} {r['text']}  ({r['file']})")
    return 0 if all(r["msa1"] in ("AA", "CA") or r.get("no_reply") for r in results) else 1
