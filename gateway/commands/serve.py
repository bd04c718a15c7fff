"""``relais serve``: run the gateway on its embedded defaults or a config file."""

from __future__ import annotations

import argparse
import asyncio
import sys

from gateway.commands._common import add_config_args, settings_from
from gateway.logging import configure_logging

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="run the gateway (MLLP + HTTP)")
    add_config_args(p)
    p.add_argument("--mllp-host")
    p.add_argument("--mllp-port", type=int)
    p.add_argument("--http-host")
    p.add_argument("--http-port", type=int)
    p.add_argument("--allow-test-ins", action="store_true", default=None,
                   help="accept the ANS test and demo INS OIDs (test platforms only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gateway.service import Service, run_until_signalled

    settings = settings_from(
        args,
        mllp={"host": args.mllp_host, "port": args.mllp_port},
        http={"host": args.http_host, "port": args.http_port},
        identity={"allow_test_ins": args.allow_test_ins},
    )
    configure_logging(settings.gateway.log_level)
    from gateway.errors import StartupRefused

    try:
        return asyncio.run(run_until_signalled(Service(settings)))
    except StartupRefused as exc:
        print(f"relais: {exc}", file=sys.stderr, flush=True)
        return 2
