"""``relais send FILE… --to HOST:PORT``: push HL7 v2 files over MLLP and report each ACK."""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.commands._common import dump_json
from gateway.commands.failures import EX_USAGE, CommandFailed

__all__ = ["register", "normalise_segments", "summary"]

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


def _line(r: dict[str, Any]) -> str:
    return f"{r['control_id'] or '-':<16} {r['msa1'] or '--':<3} {r['text']}  ({r['file']})"


def summary(results: list[dict[str, Any]]) -> str:
    """``3 sent: 2 AA, 1 AE, 0 AR, 0 without answer`` (enhanced-mode codes counted with their original;
    a message that asks for no answer, an ACK or MSH-15 NE, is counted apart)."""
    counts = {"AA": 0, "AE": 0, "AR": 0, "": 0}
    none_due = sum(1 for r in results if r.get("no_reply"))
    for r in results:
        if not r.get("no_reply"):
            code = {"CA": "AA", "CE": "AE", "CR": "AR"}.get(r["msa1"], r["msa1"])
            counts[code if code in counts else ""] += 1
    line = (f"{len(results)} sent: {counts['AA']} AA, {counts['AE']} AE, {counts['AR']} AR, "
            f"{counts['']} without answer")
    return line + (f", {none_due} with no answer due" if none_due else "")


async def _send_all(
    messages: list[tuple[str, bytes]], host: str, port: int, wait: float, show: Callable[[dict[str, Any]], None]
) -> list[dict[str, Any]]:
    from adapters.mllp_client import MllpClient

    results: list[dict[str, Any]] = []
    async with MllpClient(host, port, timeout=wait) as client:
        for name, data in messages:
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
            result = {"file": name, "control_id": control_id, **info}
            results.append(result)
            show(result)
    return results


def run(args: argparse.Namespace) -> int:
    host, _, port = args.to.rpartition(":")
    if not host or not port.isdigit():
        raise CommandFailed(f"--to must be HOST:PORT, got {args.to!r}", EX_USAGE)
    # every file is read before the first one is sent: a typo in the last name must not
    # leave the first messages sent and the rest not
    messages = [(name, normalise_segments(Path(name).read_bytes())) for name in args.files]

    def show(result: dict[str, Any]) -> None:
        if not args.json:
            print(_line(result), flush=True)

    results = asyncio.run(_send_all(messages, host, int(port), args.timeout, show))
    if args.json:
        dump_json(results)
    else:
        print(summary(results))
    return 0 if all(r["msa1"] in ("AA", "CA") or r.get("no_reply") for r in results) else 1
