"""``relais ins`` through ``gateway.cli.main`` and the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = main(["ins", *argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_valid_ins_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, verdict = run_json(capsys, "185057800608491", "--oid", "1.2.250.1.213.1.4.8", "--sex", "M")
    assert code == 0
    assert verdict == {"valid": True, "kind": "INS-NIR", "errors": [], "warnings": []}


def test_invalid_key_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, verdict = run_json(capsys, "276037510669380")
    assert code == 1
    assert verdict == {"valid": False, "kind": None, "errors": ["INS_KEY"], "warnings": []}


def test_test_oid_refused_then_allowed(capsys: pytest.CaptureFixture[str]) -> None:
    code, verdict = run_json(capsys, "279035121518989", "--oid", "1.2.250.1.213.1.4.10")
    assert code == 1 and verdict["errors"] == ["INS_OID_TEST"]
    code, verdict = run_json(
        capsys,
        "279035121518989",
        "--oid",
        "1.2.250.1.213.1.4.10",
        "--allow-test-ins",
        "--sex",
        "F",
        "--birth-date",
        "1979-03-01",
    )
    assert code == 0
    assert verdict == {"valid": True, "kind": "INS-NIR-TEST", "errors": [], "warnings": []}


def test_birth_date_and_sex_mismatch(capsys: pytest.CaptureFixture[str]) -> None:
    code, verdict = run_json(capsys, "185057800608491", "--sex", "F", "--birth-date", "1986-05-02")
    assert code == 1
    assert verdict["errors"] == ["INS_BIRTH_YEAR_MISMATCH", "INS_SEX_MISMATCH"]


def test_warning_only_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    code, verdict = run_json(capsys, "785057800608482")
    assert code == 0
    assert verdict["warnings"] == ["INS_SEX_DIGIT"]


def test_readable_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ins", "253072C07300443"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("invalid")
    assert "INS_FORMAT" in out and "2A or 2B" in out
    assert main(["ins", "188079935012311", "--oid", "1.2.250.1.213.1.4.9"]) == 0
    assert capsys.readouterr().out.strip() == "valid (INS-NIA)"


def test_sex_choices_are_enforced(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["ins", "185057800608491", "--sex", "X"])
    assert exc.value.code == 64  # EX_USAGE: never confused with a command's own verdict codes
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'X'" in err


@pytest.mark.slow
def test_console_script() -> None:
    script = Path(sys.executable).with_name("relais")
    exe = str(script) if script.exists() else shutil.which("relais")
    if exe is None:
        pytest.skip(reason="the relais console script is not installed")
    ok = subprocess.run(
        [exe, "ins", "253072A07300443", "--oid", "1.2.250.1.213.1.4.8", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"valid": True, "kind": "INS-NIR", "errors": [], "warnings": []}
    bad = subprocess.run(
        [exe, "ins", "123456789012244"], capture_output=True, text=True, timeout=60, check=False
    )
    assert bad.returncode == 1
    assert "INS_KEY" in bad.stdout
