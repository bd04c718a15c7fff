"""DmpSimulator fault drawing and the ``relais simulate`` option parsing (no sockets)."""

from __future__ import annotations

import pytest

from adapters.dmp.simulator import FAULT_KINDS, DmpSimulator
from gateway.cli import build_parser
from gateway.commands.simulate import _options


def test_fault_draws_are_seeded_and_half_after_store() -> None:
    sim_a, sim_b = DmpSimulator(fail_rate=0.5, seed=3), DmpSimulator(fail_rate=0.5, seed=3)
    a = [sim_a._draw_fault() for _ in range(400)]
    assert a == [sim_b._draw_fault() for _ in range(400)]
    faults = [f for f in a if f is not None]
    assert 150 < len(faults) < 250
    assert {kind for kind, _ in faults} == set(FAULT_KINDS)
    after = sum(1 for _, after_store in faults if after_store)
    assert 0.35 < after / len(faults) < 0.65
    assert DmpSimulator(fail_rate=1.0, seed=3)._draw_fault() is not None


def test_script_comes_first() -> None:
    sim = DmpSimulator(script=["503", "ok", "reset:after"])
    assert [sim._draw_fault() for _ in range(4)] == [("503", False), None, ("reset", True), None]


def test_unknown_fault_kind() -> None:
    with pytest.raises(ValueError):
        DmpSimulator(faults=["503", "fire"])


def test_cli_options() -> None:
    args = build_parser().parse_args(
        ["simulate", "dmp", "--port", "0", "--fail-rate", "0.2", "--faults", "503,reset", "--seed", "4"]
    )
    options = _options(args)
    assert options["faults"] == ("503", "reset") and options["fail_rate"] == 0.2 and options["seed"] == 4
    DmpSimulator(**options)  # every option is accepted by the simulator
    mhd = build_parser().parse_args(["simulate", "mhd", "--port", "0", "--trust-cert", "x.pem"])
    with pytest.raises(SystemExit):
        _options(mhd)
