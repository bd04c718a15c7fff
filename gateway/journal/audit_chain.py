"""The audit trail's hash chain: each row's hash covers the previous one, so an edit shows.

Every backend appends with :func:`audit_hash`; ``relais audit verify`` (``gateway.operations.audit``)
walks the chain with the same function, whichever backend wrote it.
"""

from __future__ import annotations

import hashlib
import json

__all__ = ["GENESIS_HASH", "audit_hash"]

GENESIS_HASH = "0" * 64  # the "previous hash" of the first row


def audit_hash(prev_hash: str, at: str, actor: str, action: str, target: str | None, detail: str) -> str:
    material = json.dumps([prev_hash, at, actor, action, target, detail], ensure_ascii=False)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()
