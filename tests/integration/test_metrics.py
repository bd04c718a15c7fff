"""Observability: /metrics parsed as Prometheus text, and no patient data in the service's logs."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import structlog
from prometheus_client.parser import text_string_to_metric_families

from gateway.errors import DestinationUnavailable
from gateway.logging import configure_logging
from gateway.testing import settings_for, start_gateway, stop_gateway, with_control_id

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2"
OP = "op-token-0123456789"
TOKENS = f"operator:{OP},viewer:view-token-0123456789"
CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "hl7v2" / "ansforge" / "hl7V2-exemples"


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


async def test_metrics_count_received_messages_and_exchanges(tmp_path: Path) -> None:
    gw = await start_gateway(settings_for(tmp_path, TOKENS), token=OP)
    mdm = (FIXTURES / "mdm_t02_initial.hl7").read_bytes()
    adt = (FIXTURES / "adt_a01_vali.hl7").read_bytes()
    try:
        for cid in ("M1", "M2", "M3"):
            await gw.mllp.send(with_control_id(mdm, cid))
        await gw.mllp.send(with_control_id(adt, "M4"))
        async with gw.http.post("/v1/hl7v2", data=with_control_id(adt, "M5"), headers=gw.auth(OP)) as r:
            assert r.status == 200
        async with gw.http.get("/metrics") as r:  # open: scraped by Prometheus without a token
            assert r.status == 200
            text = await r.text()
    finally:
        await stop_gateway(gw)
    received = samples(text, "relais_messages_received_total")
    assert received[(("listener", "mllp"), ("type", "MDM^T02"))] == 3
    assert received[(("listener", "mllp"), ("type", "ADT^A01"))] == 1
    assert received[(("listener", "http-hl7v2"), ("type", "ADT^A01"))] == 1
    exchanges = samples(text, "relais_exchanges")
    assert exchanges[(("status", "held"),)] == 3 and exchanges[(("status", "accepted"),)] == 2
    assert samples(text, "relais_acks_total")[(("code", "AA"),)] == 5
    lag = samples(text, "relais_event_loop_lag_max_seconds")  # the running service's monitor feeds it
    assert list(lag) == [()] and 0 <= lag[()] < 60
    stages = samples(text, "relais_pipeline_seconds_count")
    for stage in ("total", "analyse", "journal", "ack"):
        assert stages[(("stage", stage),)] == 5, stage  # each message timed at each stage
    senders = samples(text, "relais_messages_by_sender_total")
    assert senders[(("sender", "DPI-RELAIS|CLINIQUE-RELAIS"),)] == 3
    assert senders[(("sender", "GAM|RELAIS-TEST"),)] == 2


async def test_labels_taken_from_input_stay_bounded(tmp_path: Path) -> None:
    gw = await start_gateway(settings_for(tmp_path, TOKENS), token=OP)
    adt = (FIXTURES / "adt_a01_vali.hl7").read_bytes()
    try:
        for n in range(60):  # 60 made-up sending applications and 120 made-up message types
            for kind in (f"ZZ{n}^A01", f"ZY{n}^A01"):
                raw = with_control_id(adt, f"B{n}{kind[:2]}").replace(b"|GAM|", f"|APP{n}|".encode(), 1)
                await gw.mllp.send(raw.replace(b"|ADT^A01^ADT_A01|", f"|{kind}|".encode(), 1))
        async with gw.http.get("/metrics") as r:
            text = await r.text()
    finally:
        await stop_gateway(gw)
    senders = samples(text, "relais_messages_by_sender_total")
    assert len(senders) == 51 and senders[(("sender", "other"),)] == 20  # 50 named, then "other"
    types = {dict(k)["type"] for k in samples(text, "relais_messages_received_total")}
    assert len(types) == 101 and "other" in types


# -- PHI in logs --------------------------------------------------------------------------------
def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def patient_values(raw: bytes) -> set[str]:
    """INS/IPP (PID-3.1), names (PID-5.1, PID-5.2) and slices of base64 bodies (OBX-5.5)."""
    found: set[str] = set()
    for seg in re.split(r"\r\n|\r|\n", _text(raw)):
        fields = seg.split("|")
        if fields[0] == "PID" and len(fields) > 5:
            for rep in fields[3].split("~"):
                found.add(rep.split("^")[0])
            for rep in fields[5].split("~"):
                comps = rep.split("^")
                found.update(comps[:2])
        if fields[0] == "OBX" and len(fields) > 5:
            comps = fields[5].split("^")
            if len(comps) > 4 and len(comps[4]) > 200:
                body = comps[4]
                found.update(body[i : i + 40] for i in range(100, len(body) - 40, max(40, len(body) // 8)))
    return {v for v in found if len(v) >= 4 and v != '""'}


async def test_no_patient_data_in_logs(tmp_path: Path) -> None:
    # our fixtures always; the ANS corpus when it sits beside the repository
    files = sorted(FIXTURES.glob("*.hl7"))
    files += sorted(p for p in CORPUS.rglob("*") if p.suffix in (".hl7", ".er7")) if CORPUS.is_dir() else []
    messages = [re.sub(rb"\r\n|\n", b"\r", p.read_bytes()).strip(b"\r") + b"\r" for p in files]
    secrets = set().union(*(patient_values(m) for m in messages))
    assert "279035121518989" in secrets and "PAT-TROIS" in secrets

    stream = io.StringIO()
    previous = structlog.get_config()
    configure_logging("debug", stream=stream)
    try:
        gw = await start_gateway(settings_for(tmp_path, TOKENS, identity={"allow_test_ins": True}), token=OP)
        try:
            for i, msg in enumerate(messages):
                # a message the gateway could not answer still must not leak into the logs
                with contextlib.suppress(DestinationUnavailable):
                    await gw.mllp.send(msg)
                async with gw.http.post("/v1/hl7v2", data=msg, headers=gw.auth(OP),
                                        params={"i": str(i)}) as r:
                    await r.read()
            _, page = await gw.get("/v1/exchanges", params={"limit": "500"})
            for ex in page["items"][:10]:
                await gw.post(f"/v1/exchanges/{ex['id']}/replay")
        finally:
            await stop_gateway(gw)
    finally:
        structlog.configure(**previous)

    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    assert len(lines) > len(messages)
    logged = "\n".join(json.dumps(e, ensure_ascii=False) for e in lines)
    leaks = sorted(v for v in secrets if v in logged)
    assert not leaks, f"patient data in logs: {leaks[:5]}"
