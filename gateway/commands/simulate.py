"""``relais simulate dmp|mhd``: run a destination simulator until SIGINT / SIGTERM.

    relais simulate dmp --port 8081 [--host 127.0.0.1] [--fail-rate 0.2]
                        [--faults 503,reset,timeout,soap] [--latency-ms 50] [--seed 1]
                        [--xsd-dir ../shared/corpus/xds/xsd] [--trust-cert fixtures/pki/test-vihf-cert.pem]
    relais simulate mhd --port 8082 [same fault options]
    relais simulate mss --port 2525 --user relais@pfi.test:PASS --user dr@hop.test:PASS
                        [--full box@hop.test] [--reader dr@hop.test] [--dir D]
        (SMTP relay + dovecot IMAP/LMTP; needs root and dovecot-imapd/dovecot-lmtpd; the CA and
        a client certificate for Relais are written under D/pki)

Prints one readiness line (``<kind> simulator listening on <url>``) once the socket is
bound, so scripts can wait for it. Each kind maps to a ``(module, class)`` in ``SIMULATORS``;
a simulator has ``make_app() / async start(host, port) -> url / async stop()`` and takes
``fail_rate, faults, latency_ms, seed`` keywords (plus kind-specific ones, see ``_options``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import signal
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["register", "run", "SIMULATORS"]

SIMULATORS: dict[str, tuple[str, str]] = {
    "dmp": ("adapters.dmp.simulator", "DmpSimulator"),
    "mhd": ("adapters.mhd.simulator", "MhdSimulator"),
    "mss": ("adapters.mssante.simulator", "MssSimulator"),
}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("simulate", help="run a DMP (XDS.b) or MHD destination simulator")
    p.add_argument("kind", choices=sorted(SIMULATORS))
    p.add_argument("--port", type=int, required=True, help="TCP port (0: any free port)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--fail-rate", type=float, default=0.0, help="probability of an injected fault (0..1)")
    p.add_argument("--faults", default=None, help="comma-separated fault kinds (default: all of the kind's)")
    p.add_argument("--latency-ms", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--after-store-ratio", type=float, default=None,
                   help="dmp: share of faults that happen after the document is stored (default 0.5; "
                        "0 = a DMP that is down and stores nothing)")
    p.add_argument("--xsd-dir", default=None, help="dmp: validate ITI-41 requests against this XSD directory")
    p.add_argument("--trust-cert", default=None, help="dmp: PEM certificate the VIHF must be signed with")
    p.add_argument("--user", action="append", default=[], help="mss: mailbox ADDRESS:PASSWORD (repeat)")
    p.add_argument("--full", action="append", default=[], help="mss: mailbox over quota (452 4.2.2)")
    p.add_argument("--reader", action="append", default=[], help="mss: mailbox whose user reads mail (MDN)")
    p.add_argument("--dir", default=None, help="mss: working directory (mailboxes, dovecot config, PKI)")
    p.set_defaults(func=run)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"fail_rate": args.fail_rate, "latency_ms": args.latency_ms, "seed": args.seed}
    if args.faults:
        options["faults"] = tuple(f.strip() for f in args.faults.split(",") if f.strip())
    if args.kind == "dmp":
        options["xsd_dir"] = args.xsd_dir
        options["trust_cert"] = args.trust_cert
        options["now"] = lambda: datetime.now(UTC)  # check the VIHF validity window
        if args.after_store_ratio is not None:
            if not 0 <= args.after_store_ratio <= 1:
                raise SystemExit("--after-store-ratio must be between 0 and 1")
            options["after_store_ratio"] = args.after_store_ratio
    elif args.after_store_ratio is not None:
        raise SystemExit("--after-store-ratio applies to the dmp simulator")
    if args.kind == "mss":
        options.update(directory=args.dir, users=tuple(args.user), full=tuple(args.full),
                       readers=tuple(args.reader))
    elif args.user or args.full or args.reader or args.dir:
        raise SystemExit("--user / --full / --reader / --dir apply to the mss simulator")
    if args.kind != "dmp" and (args.xsd_dir or args.trust_cert):
        raise SystemExit(f"--xsd-dir / --trust-cert apply to the dmp simulator, not {args.kind}")
    return options


def _load(kind: str) -> type:
    module_name, class_name = SIMULATORS[kind]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise SystemExit(f"the {kind} simulator is not available ({exc.name} missing)") from exc
    return getattr(module, class_name)  # type: ignore[no-any-return]


async def _serve(simulator: Any, host: str, port: int, kind: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C still raises
            loop.add_signal_handler(sig, stop.set)
    url = await simulator.start(host, port)
    print(f"{kind} simulator listening on {url}", flush=True)
    try:
        await stop.wait()
    finally:
        await simulator.stop()


def run(args: argparse.Namespace) -> int:
    simulator_class = _load(args.kind)
    try:
        simulator = simulator_class(**_options(args))
    except (ValueError, OSError) as exc:
        print(f"relais simulate: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_serve(simulator, args.host, args.port, args.kind))
    return 0
