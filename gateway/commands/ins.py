"""``relais ins``: check one INS matricule from the command line.

Prints the verdict to stdout (JSON with ``--json``) and exits 0 when the INS is valid,
1 when it is not. Nothing is logged: the number is patient data.
"""

from __future__ import annotations

import argparse
import json

from gateway.core.identity.ins import InsVerdict, validate_ins

__all__ = ["register", "run", "format_verdict"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``ins`` sub-command."""
    parser = subparsers.add_parser(
        "ins",
        help="check an INS matricule (key, format, OID, sex and birth date)",
        description="Check an INS matricule. Exit status 0 when valid, 1 when not.",
    )
    parser.add_argument("number", metavar="INS", help="the 15-character INS (key included)")
    parser.add_argument("--oid", help="assigning authority OID (1.2.250.1.213.1.4.8 INS-NIR, .9 INS-NIA)")
    parser.add_argument("--sex", choices=("M", "F"), help="administrative sex to compare with the sex digit")
    parser.add_argument("--birth-date", metavar="YYYY-MM-DD", help="birth date (partial allowed)")
    parser.add_argument(
        "--allow-test-ins",
        action="store_true",
        help="accept the test and demo OIDs (…4.10, …4.11); never in production",
    )
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    parser.set_defaults(func=run)


def format_verdict(verdict: InsVerdict) -> str:
    """Human-readable verdict: a status line, then one line per finding."""
    head = "valid" if verdict.valid else "invalid"
    if verdict.kind:
        head += f" ({verdict.kind})"
    lines = [head]
    lines += [f"  error   {f.code}: {f.message}" for f in verdict.errors]
    lines += [f"  warning {f.code}: {f.message}" for f in verdict.warnings]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Validate ``args.number`` and print the verdict; 0 when valid, 1 otherwise."""
    verdict = validate_ins(
        args.number,
        oid=args.oid,
        sex=args.sex,
        birth_date=args.birth_date,
        allow_test=args.allow_test_ins,
    )
    if args.json:
        print(json.dumps(verdict.as_dict()))
    else:
        print(format_verdict(verdict))
    return 0 if verdict.valid else 1
