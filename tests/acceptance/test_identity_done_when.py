"""Issue "INS identity gate", done-when: with `relais serve --allow-test-ins`, a document MDM
with PID-32 changed to PROV is acknowledged AA, shown `held` by `relais exchanges --json`, and
leaves `held` by itself once an admission ADT qualifying the same INS arrives.

Run with our fixtures (mdm_t02_initial + adt_a01_vali, test INS 279035121518989) and, when
../shared/corpus is there, with the ANS Ségur MDM and the ANS PAM-FR admission."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.acceptance.test_crash import free_port, start_serve
from tests.support import CORPUS, FIXTURES, SEGUR, SOURCES, corpus_path

pytestmark = pytest.mark.slow


def relais(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=60)


def exchanges(data: Path) -> list[dict]:  # type: ignore[type-arg]
    out = relais("exchanges", "--data-dir", str(data), "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def sources(source: str) -> tuple[Path, Path]:
    """The document MDM (PID-32 VALI) and the admission ADT for the same INS."""
    if source == "fixtures":
        return FIXTURES / "hl7v2" / "mdm_t02_initial.hl7", FIXTURES / "hl7v2" / "adt_a01_vali.hl7"
    mdm = corpus_path(*SEGUR.relative_to(CORPUS).parts, "mdm", "initial", "message_MDM_CR_Radio_INIT_N1_Base64.er7")
    return mdm, corpus_path("hl7v2", "ansforge", "hl7V2-exemples", "pam-fr", "sgl", "admission.er7")


@pytest.mark.parametrize("source", SOURCES)
def test_prov_mdm_is_held_then_released_by_the_admission(tmp_path: Path, source: str) -> None:
    mdm, adt = sources(source)
    prov = tmp_path / "mdm_prov.er7"
    text = mdm.read_bytes()
    assert text.count(b"|N|VALI") == 1
    prov.write_bytes(text.replace(b"|N|VALI", b"|N|PROV"))
    data = tmp_path / "data"
    port = free_port()
    proc = start_serve(data, port, free_port())
    try:
        sent = relais("send", str(prov), "--to", f"127.0.0.1:{port}", "--json")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert json.loads(sent.stdout)[0]["msa1"] == "AA"
        (row,) = exchanges(data)
        assert row["status"] == "held" and row["reason_code"] == "INS_NOT_QUALIFIED"

        assert relais("send", str(adt), "--to", f"127.0.0.1:{port}").returncode == 0
        for _ in range(100):
            mdm_row = next(r for r in exchanges(data) if r["message_type"] == "MDM^T02")
            if mdm_row["status"] == "delivered":
                break
            time.sleep(0.1)
        assert mdm_row["status"] == "delivered"  # released without any operator action
        shown = json.loads(relais("show", mdm_row["id"], "--data-dir", str(data), "--json").stdout)
        assert "released" in [e["stage"] for e in shown["events"]]
    finally:
        proc.terminate()
        proc.wait(15)
