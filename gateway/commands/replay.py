"""``relais replay ID``: run the pipeline again on a stored exchange (audited).

Two ways, because a replay produces deliveries that the *running* dispatcher must send:

* ``--to-http URL``: ask the running gateway (``POST /v1/exchanges/{id}/replay``) with an
  operator token (``--token``, else ``RELAIS_API_TOKEN``, else ``<data_dir>/api-token``);
  the gateway wakes its dispatcher at once. Preferred while ``serve`` runs.
* offline: an ``Intake`` on a writable journal (a second SQLite writer is fine: WAL and
  busy timeout); the new deliveries wait in the journal until a dispatcher polls them.
  Without ``--config`` it routes with the configuration ``serve`` recorded in the data
  directory (``effective-config.json``), not the CLI's defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import urllib.error
import urllib.request
from contextlib import suppress
from typing import Any

from gateway.commands._common import add_config_args, open_writable, settings_from

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("replay", help="run the pipeline again on a stored exchange (audited)")
    p.add_argument("id", help="exchange id (or a unique prefix)")
    p.add_argument("--operator", help="recorded in the audit trail (default: the system user)")
    p.add_argument("--to-http", metavar="URL", help="replay through a running gateway, e.g. http://127.0.0.1:8080")
    p.add_argument("--token", help="operator token for --to-http (default: RELAIS_API_TOKEN or <data_dir>/api-token)")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.to_http:
        return _via_http(args)
    return asyncio.run(_offline(args))


def _token(args: argparse.Namespace) -> str | None:
    if args.token:
        return str(args.token)
    if os.environ.get("RELAIS_API_TOKEN"):
        return os.environ["RELAIS_API_TOKEN"]
    from gateway.web.auth import TOKEN_FILE

    path = settings_from(args).data_dir / TOKEN_FILE
    return path.read_text(encoding="utf-8").strip() if path.exists() else None


def _via_http(args: argparse.Namespace) -> int:
    token = _token(args)
    if not token:
        print("replay: no token; give --token or set RELAIS_API_TOKEN")
        return 2
    url = f"{args.to_http.rstrip('/')}/v1/exchanges/{args.id}/replay"
    req = urllib.request.Request(url, method="POST", data=b"", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - operator-given URL
            body: dict[str, Any] = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        with suppress(ValueError):
            detail = json.loads(detail).get("detail", detail)
        print(f"replay refused ({exc.code}): {detail}")
        return 1
    except OSError as exc:
        print(f"replay: cannot reach {args.to_http}: {exc}")
        return 1
    print(f"replayed {body['replay_of']} as {body['exchange_id']} ({body['status']})")
    return 0


async def _offline(args: argparse.Namespace) -> int:
    from gateway.ports import SystemClock
    from gateway.service import make_intake

    # the server's recorded configuration unless --config says otherwise: replay routes as serve
    # does, from the configuration alone (no destination is built, no key generated)
    settings, journal = open_writable(args, prefer_effective=True)
    try:
        intake = make_intake(journal, settings, SystemClock())
        ex = await journal.get_exchange(args.id)
        if ex is None:
            print(f"no exchange {args.id}")
            return 1
        actor = f"cli:{args.operator or getpass.getuser()}"
        try:
            result = await intake.replay(ex.id, actor=actor)
        except KeyError:
            print(f"exchange {ex.id} has no stored bytes (pruned); it cannot be replayed")
            return 1
    finally:
        await journal.close()
    print(f"replayed {ex.id} as {result.exchange_id} ({result.status})")
    return 0
