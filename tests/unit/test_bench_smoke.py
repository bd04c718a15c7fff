"""Smoke test of ``bench/run.py --quick``: it runs and writes well-formed tables (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MICRO_HEADER = ["message", "size", "row", "outcome", "n", "msg/s", "p50 ms", "p99 ms",
                "tracemalloc peak KiB", "peak RSS MiB", "note"]
E2E_HEADER = ["message", "size", "ACK", "connections", "n", "msg/s", "ACK p50 ms", "ACK p99 ms",
              "journal writes", "commits", "commits/writes", "dispatcher drain s", "tracemalloc peak KiB",
              "peak RSS MiB"]


def _tables(text: str) -> list[list[list[str]]]:
    """Markdown tables as lists of rows of cells (the separator row dropped)."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-:") for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def _number(cell: str) -> float:
    return float(cell.replace(" ", ""))


def test_quick_run_writes_one_row_per_message_and_scenario(tmp_path: Path) -> None:
    # A subprocess: the benchmark configures logging and tracemalloc process-wide.
    out = tmp_path / "results.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text(encoding="utf-8")
    assert "| ADT^A01 |" in proc.stdout  # the table is printed too
    assert "**cpu count**" in text and "**python**" in text and "**date**" in text

    micro, e2e = _tables(text)
    assert micro[0] == MICRO_HEADER and e2e[0] == E2E_HEADER
    assert all(len(row) == len(MICRO_HEADER) for row in micro)
    assert all(len(row) == len(E2E_HEADER) for row in e2e)

    rows = micro[1:]
    messages = ["ADT^A01", "ORU^R01 30 OBX", "MDM^T02 CDA 250 KB"]
    scenarios = ["relais pipeline", "relais parse", "hl7apy flat", "hl7apy groups"]
    assert [(r[0], r[2]) for r in rows] == [(m, s) for m in messages for s in scenarios]
    for r in rows:
        if r[3].startswith("fails"):  # hl7apy may refuse a message; the row says so
            assert r[2].startswith("hl7apy") and r[4] == "0" and r[5] == "—"
            continue
        assert int(r[4]) == 3
        assert _number(r[5]) > 0 and 0 < _number(r[6]) <= _number(r[7])
        assert _number(r[8]) > 0 and _number(r[9]) > 0
    by_key = {(r[0], r[2]): r for r in rows}
    assert by_key[("ADT^A01", "relais pipeline")][3] == "AA accepted"
    assert by_key[("MDM^T02 CDA 250 KB", "relais pipeline")][3] == "AA accepted"
    assert by_key[("ADT^A01", "hl7apy flat")][3] == "fields equal"

    assert [r[0] for r in e2e[1:]] == messages
    for r in e2e[1:]:
        assert r[2] in ("AA", "AE") and int(r[4]) == 3 and _number(r[5]) > 0
        writes, commits = int(r[8]), int(r[9])
        assert writes >= 3 and 1 <= commits <= writes
        assert _number(r[11]) >= 0  # the dispatcher delivered everything queued
