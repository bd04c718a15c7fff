"""MTOM/XOP (``multipart/related``) serialisation and parsing, binary-safe and pure.

Written by hand rather than with ``email``: the parts carry arbitrary bytes (a CDA may
hold a base64 PDF, an attachment may be raw binary) and must come back byte-exact, with
no line-ending or charset rewriting. Parts are separated per RFC 2046 (CRLF before each
delimiter belongs to the delimiter); bare-LF producers are tolerated on parsing.
"""

from __future__ import annotations

import hashlib
import re

from gateway.errors import DestinationUnavailable

__all__ = ["MtomError", "ROOT_CID", "build_mtom", "parse_mtom", "content_id_header"]

ROOT_CID = "root.message@relais"
SOAP12_ACTION_TYPE = "application/soap+xml"


class MtomError(DestinationUnavailable):
    """A multipart body we cannot read (a broken answer is treated as a transport failure)."""

    default_code = "MTOM_INVALID"


def content_id_header(cid: str) -> str:
    return f"<{cid}>"


def _boundary_for(parts: list[bytes]) -> str:
    digest = hashlib.sha1(b"".join(parts)).hexdigest()
    boundary = f"MIMEBoundary_{digest}"
    # A SHA-1 of the content inside the content is only possible by construction; be safe anyway.
    while any(boundary.encode() in part for part in parts):
        boundary = "MIMEBoundary_" + hashlib.sha1(boundary.encode()).hexdigest()
    return boundary


def build_mtom(
    envelope: bytes,
    attachments: dict[str, bytes],
    *,
    action: str | None = None,
    attachment_type: str = "application/octet-stream",
) -> tuple[str, bytes]:
    """Serialise a SOAP 1.2 envelope and its XOP attachments as ``multipart/related``.

    Returns ``(content_type_header, body)``. The root part has Content-ID ``ROOT_CID``;
    each attachment's Content-ID is its dict key (referenced as ``cid:<key>``).
    The boundary is derived from the content, so the output is deterministic.
    """
    boundary = _boundary_for([envelope, *attachments.values()])
    action_param = f'; action="{action}"' if action else ""
    root_type = f'application/xop+xml; charset=UTF-8; type="{SOAP12_ACTION_TYPE}"{action_param}'
    chunks: list[bytes] = []
    delimiter = f"--{boundary}\r\n".encode()
    chunks += [
        delimiter,
        f"Content-Type: {root_type}\r\n".encode(),
        b"Content-Transfer-Encoding: binary\r\n",
        f"Content-ID: {content_id_header(ROOT_CID)}\r\n\r\n".encode(),
        envelope,
        b"\r\n",
    ]
    for cid, data in attachments.items():
        chunks += [
            delimiter,
            f"Content-Type: {attachment_type}\r\n".encode(),
            b"Content-Transfer-Encoding: binary\r\n",
            f"Content-ID: {content_id_header(cid)}\r\n\r\n".encode(),
            data,
            b"\r\n",
        ]
    chunks.append(f"--{boundary}--\r\n".encode())
    content_type = (
        f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; '
        f'start="{content_id_header(ROOT_CID)}"; start-info="{SOAP12_ACTION_TYPE}"{action_param}'
    )
    return content_type, b"".join(chunks)


_PARAM = re.compile(r';\s*([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def _params(header: str) -> tuple[str, dict[str, str]]:
    media = header.split(";", 1)[0].strip().lower()
    params: dict[str, str] = {}
    for key, raw in _PARAM.findall(header):
        value = raw.strip()
        if value.startswith('"') and value.endswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[key.lower()] = value
    return media, params


def _strip_cid(value: str) -> str:
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    return value.removeprefix("cid:")


def _split_headers(part: bytes) -> tuple[dict[str, str], bytes]:
    for sep in (b"\r\n\r\n", b"\n\n"):
        index = part.find(sep)
        if index >= 0:
            head, body = part[:index], part[index + len(sep) :]
            break
    else:
        raise MtomError("MIME part without a header/body separator")
    headers: dict[str, str] = {}
    for line in re.split(rb"\r?\n(?![ \t])", head):
        if not line.strip():
            continue
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = " ".join(value.split())
    return headers, body


def parse_mtom(content_type: str, body: bytes) -> tuple[bytes, dict[str, bytes]]:
    """Split a ``multipart/related`` body into ``(root_part_bytes, {content_id: bytes})``.

    A plain (non-multipart) ``content_type`` returns ``(body, {})`` so callers can accept
    both MTOM and simple SOAP answers. Content-IDs are returned without ``<>``.
    """
    media, params = _params(content_type or "")
    if not media.startswith("multipart/"):
        return body, {}
    boundary = params.get("boundary")
    if not boundary:
        raise MtomError("multipart body without a boundary parameter")
    return _root_and_attachments(_parts(body, boundary), start=_strip_cid(params.get("start", "")))


def _parts(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """Headers and content of each part, up to the close delimiter (RFC 2046 §5.1.1)."""
    pieces = body.split(b"--" + boundary.encode("latin-1"))
    if len(pieces) < 3:
        raise MtomError("multipart body has no parts")
    parts: list[tuple[dict[str, str], bytes]] = []
    for raw in pieces[1:]:
        if raw.startswith(b"--"):
            break  # close delimiter; the epilogue is ignored
        parts.append(_split_headers(_between_delimiters(raw)))
    else:
        raise MtomError("multipart body is not terminated")
    if not parts:
        raise MtomError("multipart body has no parts")
    return parts


def _between_delimiters(raw: bytes) -> bytes:
    """One part without the line breaks and transport padding that belong to its delimiters."""
    # The CRLF that precedes a delimiter belongs to the delimiter (RFC 2046 §5.1.1).
    if raw.endswith(b"\r\n"):
        raw = raw[:-2]
    elif raw.endswith(b"\n"):
        raw = raw[:-1]
    # Transport padding and the line break after the delimiter.
    raw = raw.lstrip(b" \t")
    if raw.startswith(b"\r\n"):
        return raw[2:]
    if raw.startswith(b"\n"):
        return raw[1:]
    return raw


def _root_and_attachments(
    parts: list[tuple[dict[str, str], bytes]], *, start: str
) -> tuple[bytes, dict[str, bytes]]:
    """The root part (named by ``start``, else the first) and the others by Content-ID."""
    root_index = 0
    attachments: dict[str, bytes] = {}
    for index, (headers, data) in enumerate(parts):
        cid = _strip_cid(headers.get("content-id", ""))
        if start and cid == start:
            root_index = index
        encoding = headers.get("content-transfer-encoding", "binary").lower()
        if encoding not in ("binary", "8bit", "7bit"):
            raise MtomError(f"unsupported Content-Transfer-Encoding {encoding!r}")
        if cid:
            attachments[cid] = data
    root = parts[root_index][1]
    root_cid = _strip_cid(parts[root_index][0].get("content-id", ""))
    attachments.pop(root_cid, None)
    return root, attachments
