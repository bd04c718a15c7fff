"""The shipped alert rules and Grafana dashboard: checked with the real promtool, and every metric
they read is one a running gateway exports (a renamed metric must break this test, not the alert)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from adapters.mllp_client import MllpClient
from tests import builders
from tests.support import fixture_bytes, mllp_port, running

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "config" / "prometheus" / "relais-rules.yml"
RULE_TESTS = ROOT / "config" / "prometheus" / "relais-rules.test.yml"
DASHBOARD = ROOT / "config" / "grafana" / "relais-dashboard.json"

# a document destination that refuses every connection: attempts fail, the delivery stays queued
UNREACHABLE = """
[[destination]]
name = "dmp"
kind = "mhd"
url = "http://127.0.0.1:9/fhir"
"""
_METRIC = re.compile(r"\b((?:relais|process)_[a-z0-9_]+)\b")
_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing in CI: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return path


def test_rules_pass_promtool_check() -> None:
    proc = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rules_pass_their_unit_tests() -> None:
    proc = subprocess.run([promtool(), "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_unit_test() -> None:
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    tested = {
        t["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text())["tests"] for t in case["alert_rule_test"]
        if t.get("exp_alerts")
    }
    assert alerts == tested


def _family(sample_name: str) -> str:
    for suffix in _SUFFIXES:
        if sample_name.endswith(suffix):
            return sample_name[: -len(suffix)]
    return sample_name


def referenced_metrics() -> set[str]:
    exprs = [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return {_family(m) for e in exprs for m in _METRIC.findall(e)}


def test_dashboard_is_importable_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"  # no data source baked in
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])


async def test_a_failing_destination_shows_in_the_metrics_the_rules_read(tmp_path: Path) -> None:
    async with running(builders.settings(tmp_path, text=UNREACHABLE)) as service:
        async with MllpClient("127.0.0.1", mllp_port(service), timeout=10) as client:
            await client.send(fixture_bytes("adt_a01_vali.hl7"))
            await client.send(fixture_bytes("mdm_t02_initial.hl7"))
        for _ in range(100):  # the dispatcher's first attempts fail at once (connection refused)
            if service.metrics.sample("relais_delivery_attempts_total", {"destination": "dmp", "outcome": "failed"}):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.01)
        await service.refresh_metrics()
        text = service.metrics.render().decode()

    families = {f.name: f for f in text_string_to_metric_families(text)}
    missing = referenced_metrics() - set(families)
    assert not missing, f"rules or dashboard read metrics the gateway does not export: {sorted(missing)}"

    def value(name: str, **labels: str) -> float:
        fam = families[_family(name)]
        return next(s.value for s in fam.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    assert value("relais_delivery_attempts_total", destination="dmp", outcome="failed") >= 1
    assert value("relais_queue_depth", destination="dmp") == 1
    assert value("relais_oldest_queued_seconds", destination="dmp") > 0
    assert value("relais_ready") == 1
    assert value("relais_journal_commits_total") >= 2 and value("relais_journal_commit_errors_total") == 0
    assert 0 < value("relais_disk_free_bytes") <= value("relais_disk_size_bytes")
    assert value("relais_build_info") == 1
    assert value("process_resident_memory_bytes") > 0
    assert "relais_deliveries_finished" in families and "relais_last_success_timestamp_seconds" in families
