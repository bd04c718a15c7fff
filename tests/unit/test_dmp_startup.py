"""Start-up checks of a DMP destination: placeholders in what the DMP reads about us."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from adapters.dmp.config import check_dmp_identity
from adapters.dmp.testing import TEST_CERT, TEST_KEY
from gateway.destinations import build_destinations
from gateway.errors import StartupRefused
from gateway.ports import SystemClock
from tests import builders


def _settings(tmp_path: Path, url: str, *, extra: str = "", source_id: str = "1.2.250.1.999999.1"):  # type: ignore[no-untyped-def]
    return builders.settings(
        tmp_path,
        text=f'[gateway]\nsource_id = "{source_id}"\n\n[[destination]]\nname = "dmp"\n'
        f'kind = "dmp-xds"\nurl = "{url}"\nvihf_key = "{TEST_KEY}"\nvihf_cert = "{TEST_CERT}"\n{extra}',
    )


def test_placeholders_are_a_loud_warning_on_loopback(tmp_path: Path) -> None:
    with capture_logs() as logs:
        build_destinations(_settings(tmp_path, "http://127.0.0.1:9100/"), SystemClock())
    problems = [e["problem"] for e in logs if e["event"] == "dmp.placeholder_identity"]
    assert any("source_id" in p for p in problems) and any("LPS_ID_HOMOLOGATION_DMP" in p for p in problems)


def test_placeholders_refuse_a_real_dmp(tmp_path: Path) -> None:
    with pytest.raises(StartupRefused) as info:
        build_destinations(_settings(tmp_path, "https://dmp.example.fr/repository"), SystemClock())
    message = str(info.value)
    assert "\n" not in message and "refusing to start against https://dmp.example.fr/repository" in message


def test_declared_test_platform_is_allowed(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "https://test.dmp.example.fr/", extra="test_platform = true\n")
    assert "dmp" in build_destinations(settings, SystemClock())


def test_real_identity_starts(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path, "https://dmp.example.fr/", source_id="1.2.250.1.12345.6",
        extra='vihf_lps_homologation = "HOMOLOG-42"\n',
    )
    with capture_logs() as logs:
        assert "dmp" in build_destinations(settings, SystemClock())
    assert not [e for e in logs if e["event"] == "dmp.placeholder_identity"]


def test_unsigned_sets_only_on_a_test_platform() -> None:
    with pytest.raises(StartupRefused, match="xades = false"):
        check_dmp_identity("dmp", ["https://dmp.example.fr/"], source_id="1.2.250.1.1", homologation="H",
                           signed=False, test_platform=False)


def test_bad_roles_are_a_one_line_refusal(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "http://127.0.0.1:9100/", extra='vihf_roles = { "RIS-Y" = ["NOPE^1.2.3"] }\n')
    with pytest.raises(StartupRefused, match="JDV_J65"):
        build_destinations(settings, SystemClock())


def test_serve_refuses_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    _settings(tmp_path, "https://dmp.example.fr/repository", extra="")
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(tmp_path / "relais.toml"),
         "--mllp-port", "0", "--http-port", "0"],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if "refusing to start" in line]
    assert len(lines) == 1 and lines[0].startswith("relais: destination dmp:")
    assert "Traceback" not in done.stderr
