"""DmpSimulator fault drawing and the ``relais simulate`` option parsing (no sockets)."""

from __future__ import annotations

import pytest

from adapters.dmp.simulator import FAULT_KINDS, DmpSimulator
from adapters.faults import Fault
from gateway.cli import build_parser
from gateway.commands.simulate import _options


def test_fault_draws_are_seeded_and_half_after_store() -> None:
    sim_a, sim_b = DmpSimulator(fail_rate=0.5, seed=3), DmpSimulator(fail_rate=0.5, seed=3)
    a = [sim_a.plan.draw() for _ in range(400)]
    assert a == [sim_b.plan.draw() for _ in range(400)]
    faults = [f for f in a if f is not None]
    assert 150 < len(faults) < 250
    assert {f.kind for f in faults} == set(FAULT_KINDS)
    after = sum(1 for f in faults if f.after_store)
    assert 0.35 < after / len(faults) < 0.65
    assert DmpSimulator(fail_rate=1.0, seed=3).plan.draw() is not None


def test_script_comes_first() -> None:
    sim = DmpSimulator(script=["503", "ok", "reset:after"])
    assert [sim.plan.draw() for _ in range(4)] == [Fault("503", False), None, Fault("reset", True), None]


def test_unknown_fault_kind() -> None:
    with pytest.raises(ValueError):
        DmpSimulator(faults=["503", "fire"])


def test_reset_replays_the_same_draws_and_forgets_the_script() -> None:
    sim = DmpSimulator(fail_rate=0.5, seed=9, script=["soap"])
    first = [sim.plan.draw() for _ in range(20)]
    sim.script.append("503")
    sim.reset()
    assert sim.script == [] and sim.plan.script is sim.script  # tests append to it: one list
    assert [sim.plan.draw() for _ in range(19)] == first[1:]  # the scripted "soap" was not a draw


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
