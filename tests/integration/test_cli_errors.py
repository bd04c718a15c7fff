"""Every CLI failure ends as one line on stderr with a sysexits code; listings page and filter.

The failure cases run ``relais`` as a real process (what an operator's shell sees: no
traceback, one line, the documented exit code). The listing cases run the command in a
worker thread against a gateway serving in this event loop, as a second process would.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.commands.exchanges import parse_since
from gateway.testing import TestGateway, settings_for, start_gateway, stop_gateway, with_control_id

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2"
OP = "op-token-0123456789"
INS = "279035121518989"


def relais_process(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # a configured token keeps `serve` from printing the generated one on stderr
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "RELAIS_API_TOKENS": f"operator:{OP}"}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *argv], cwd=cwd, capture_output=True, text=True, timeout=60, env=env,
    )


def assert_one_line(proc: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("{")]  # JSON logs aside
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_check_of_a_missing_file(tmp_path: Path) -> None:
    assert_one_line(relais_process("check", "nope.hl7", cwd=tmp_path), 66, "relais check:", "nope.hl7")


def test_send_to_a_refused_port_and_a_missing_file(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there any more
    fixture = str(FIXTURES / "adt_a01_vali.hl7")
    assert_one_line(relais_process("send", fixture, "--to", f"127.0.0.1:{port}", cwd=tmp_path), 69,
                    "relais send:", f"127.0.0.1:{port}")
    # a missing file is found before anything is sent
    assert_one_line(relais_process("send", fixture, "missing.hl7", "--to", f"127.0.0.1:{port}", cwd=tmp_path), 66,
                    "missing.hl7")
    assert_one_line(relais_process("send", fixture, "--to", "nohost", cwd=tmp_path), 64, "HOST:PORT")


def test_reading_a_journal_that_does_not_exist(tmp_path: Path) -> None:
    for argv in (("exchanges",), ("show", "abc"), ("identities",)):
        assert_one_line(relais_process(*argv, "--data-dir", "nowhere", cwd=tmp_path), 66, "no journal")


def test_prune_vacuum_is_for_a_sqlite_journal_only(tmp_path: Path) -> None:
    # VACUUM rewrites the SQLite file; a server journal is refused before anything is done
    proc = relais_process("prune", "--vacuum", "--older-than", "1d", "--journal", "postgresql://relais:secret@db/relais",
                          cwd=tmp_path)
    line = assert_one_line(proc, 64, "--vacuum", "SQLite", "postgresql://relais:***@db/relais")
    assert "secret" not in line


def test_serve_on_a_port_in_use_stops_cleanly(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = relais_process("serve", "--data-dir", "data", "--mllp-port", str(port), "--http-port", "0",
                              cwd=tmp_path)
    line = assert_one_line(proc, 69, "relais serve:", "address already in use")
    assert str(port) in line


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (None, "no such file"),
        ('[mllp]\nport = "abc"\n', "mllp.port: expected an integer, got 'abc'"),
        ("[mllp\nport = 1\n", "not valid TOML"),
        ("[mlp]\nport = 1\n", "unknown section(s): mlp"),
        ("[mllp]\nprot = 1\n", "unknown setting(s) in [mllp]: prot"),
        ('[[destination]]\nname = "d"\nkind = "ftp"\n', "kind must be one of"),
        ('[[creator]]\napplication = "RIS"\n', "missing key 'address'"),
    ],
)
def test_serve_with_an_unusable_configuration(tmp_path: Path, text: str | None, fragment: str) -> None:
    config = tmp_path / "relais.toml"
    if text is not None:
        config.write_text(text, encoding="utf-8")
    proc = relais_process("serve", "--config", str(config), "--data-dir", "data", cwd=tmp_path)
    assert_one_line(proc, 78, "relais serve: configuration", fragment)
    assert not (tmp_path / "data").exists()  # refused before anything was created


def test_invalid_options_are_one_line_usage_errors(tmp_path: Path) -> None:
    assert_one_line(relais_process("exchanges", "--status", "bogus", cwd=tmp_path), 64,
                    "invalid choice: 'bogus'", "held")
    assert_one_line(relais_process("exchanges", "--limit", "0", cwd=tmp_path), 64, "--limit")
    assert_one_line(relais_process("exchanges", "--since", "yesterday", cwd=tmp_path), 64, "--since")
    assert_one_line(relais_process("frobnicate", cwd=tmp_path), 64, "invalid choice")


def test_parse_since_accepts_durations_and_iso_times() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert parse_since("2h", now=now) == "2026-12-01T10:00:00.000+00:00"
    assert parse_since("7d", now=now) == "2026-11-24T12:00:00.000+00:00"
    assert parse_since("2026-11-30") == "2026-11-30T00:00:00.000+00:00"
    assert parse_since("2026-11-30T09:00+01:00") == "2026-11-30T08:00:00.000+00:00"


# --------------------------------------------------------------------------- listings while serving


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[TestGateway]:
    g = await start_gateway(settings_for(tmp_path / "data", f"operator:{OP}"), token=OP)
    yield g
    await stop_gateway(g)


async def relais(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_exchanges_has_a_header_pages_and_says_when_there_is_more(
    gw: TestGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(gw.service.settings.data_dir)
    for n in range(3):
        await gw.mllp.send(with_control_id((FIXTURES / "adt_a01_vali.hl7").read_bytes(), f"PAGE{n}"))
    code, out, err = await relais(capsys, "exchanges", "--limit", "2", "--data-dir", data)
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["ID", "RECEIVED", "(UTC)"]
    assert [line.split()[4] for line in lines[1:]] == ["PAGE2", "PAGE1"]
    assert "--page 2" in err
    code, out, err = await relais(capsys, "exchanges", "--limit", "2", "--page", "2", "--data-dir", data)
    assert [line.split()[4] for line in out.splitlines()[1:]] == ["PAGE0"] and err == ""
    code, out, err = await relais(capsys, "exchanges", "--limit", "2", "--page", "3", "--data-dir", data)
    assert code == 0 and out.strip() == "no exchanges on page 3"


async def test_exchanges_filters_by_patient_document_sender_and_time(
    gw: TestGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(gw.service.settings.data_dir)
    await gw.mllp.send(with_control_id((FIXTURES / "adt_a01_vali.hl7").read_bytes(), "ADT1"))
    await gw.mllp.send(with_control_id((FIXTURES / "mdm_t02_initial.hl7").read_bytes(), "MDM1"))
    mdm = await gw.latest(control_id="MDM1")
    detail = await gw.service.journal.documents_for(mdm["id"])
    unique_id = detail[0].unique_id

    async def ids(*argv: str) -> list[str]:
        code, out, _ = await relais(capsys, "exchanges", "--json", "--data-dir", data, *argv)
        assert code == 0
        return [e["control_id"] for e in json.loads(out)]

    assert await ids("--patient", INS) == ["MDM1", "ADT1"]
    assert await ids("--patient", "999999999999999") == []
    assert await ids("--document", unique_id) == ["MDM1"]
    assert await ids("--sender", "DPI-RELAIS") == ["MDM1"]
    assert await ids("--since", "1h") == ["MDM1", "ADT1"]
    assert await ids("--until", "2000-01-01") == []


async def test_send_prints_each_answer_as_it_comes_and_a_summary(
    gw: TestGateway, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    files = []
    for n, name in enumerate(("adt_a01_vali.hl7", "oru_minimal.hl7")):
        path = tmp_path / f"m{n}.hl7"
        path.write_bytes(with_control_id((FIXTURES / name).read_bytes(), f"SEND{n}"))
        files.append(str(path))
    port = gw.service.addresses["mllp"].rsplit(":", 1)[1]
    code, out, _ = await relais(capsys, "send", *files, "--to", f"127.0.0.1:{port}")
    lines = out.splitlines()
    assert code == 1  # the lab ORU without a CDA is rejected
    assert lines[0].startswith("SEND0") and " AA " in lines[0]
    assert lines[1].startswith("SEND1") and " AE " in lines[1]
    assert lines[2] == "2 sent: 1 AA, 1 AE, 0 AR, 0 without answer"
