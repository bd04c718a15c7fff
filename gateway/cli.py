"""``relais`` command line: one sub-command per module in ``gateway.commands``.

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (``args -> int`` exit code). Keeping commands in their own modules keeps this
file free of imports that only one command needs (start-up time matters for ``send``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]

COMMANDS = (
    "serve",
    "send",
    "check",
    "exchanges",
    "show",
    "ins",
    "identities",
    "release",
    "retry",
    "reroute",
    "replay",
    "simulate",
    "audit",
    "prune",
    "migrate",
)


def build_parser() -> argparse.ArgumentParser:
    from gateway.commands.failures import OneLineParser

    parser = OneLineParser(prog="relais", description="Relais interoperability gateway")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMANDS:  # every command ships: an import that fails is a broken installation
        importlib.import_module(f"gateway.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; any failure ends as one line on stderr and a sysexits code."""
    from gateway.commands.failures import debug_enabled, describe
    from gateway.logging import configure_logging

    configure_logging("warning")  # commands are quiet on stderr; `serve` re-configures
    try:
        parser = build_parser()
    except ImportError as exc:  # e.g. the web layer is missing: nothing may start half-built
        sys.stderr.write(f"relais: broken installation: cannot import {exc.name or exc} (reinstall relais-sante)\n")
        return 70  # EX_SOFTWARE
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if debug_enabled():
            raise
        message, code = describe(exc)
        sys.stderr.write(f"relais {args.command}: {message}\n")
        return code


if __name__ == "__main__":
    sys.exit(main())
