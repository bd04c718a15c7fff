"""Operating at scale in a real headless Chromium: search by INS, a failing DMP flagged on the overview
while ``relais simulate dmp --fail-rate 1`` runs, and a bulk release from the held worklist.

Skipped when Playwright or /usr/bin/chromium is absent (``apt-get install chromium``).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import testing
from gateway.testing import with_control_id
from tests import builders

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2"
OP = "op-token-0123456789"
INS = "279035121518989"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def failing_dmp() -> Iterator[str]:
    """``relais simulate dmp --fail-rate 1`` as its own process: every request fails, before storing."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "simulate", "dmp", "--port", str(port), "--fail-rate", "1",
         "--faults", "503", "--after-store-ratio", "0", "--seed", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening" in line, line + (proc.stderr.read() if proc.stderr else "")
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def browser_or_skip():  # type: ignore[no-untyped-def]
    async_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
    if not CHROMIUM.exists():
        pytest.skip(reason=f"{CHROMIUM} is absent (apt-get install chromium)")
    return async_api


async def login(page, base: str) -> None:  # type: ignore[no-untyped-def]
    await page.goto(f"{base}/login")
    await page.fill("input[name=token]", OP)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/**")


async def test_search_by_ins_and_the_failing_dmp_on_the_overview(tmp_path: Path, failing_dmp: str) -> None:
    async_api = browser_or_skip()
    config = f'[[destination]]\nname = "dmp"\nkind = "dmp-xds"\nurl = "{failing_dmp}"\n'
    settings = builders.settings(tmp_path, text=config, api={"tokens": f"operator:alice:{OP}"},
                             # one try per attempt, so each failure is recorded at once
                             dispatcher={"backoff_base": 0.2, "backoff_cap": 0.5, "quick_retries": 1})
    gw = await testing.start_gateway(settings, token=OP)
    try:
        await gw.mllp.send(with_control_id((FIXTURES / "adt_a01_vali.hl7").read_bytes(), "ADT1"))
        await gw.mllp.send(with_control_id((FIXTURES / "mdm_t02_initial.hl7").read_bytes(), "DOC1"))
        await gw.mllp.send(with_control_id((FIXTURES / "adt_a01_latin9.hl7").read_bytes(), "OTHER"))
        base = gw.service.addresses["http"]
        async with async_api.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
            try:
                page = await browser.new_page()
                page.set_default_timeout(15_000)
                await login(page, base)

                # one search box: an INS finds the patient's exchanges and nobody else's
                await page.goto(f"{base}/exchanges")
                await page.fill("input[name=q]", INS)
                await page.click("form.filters button[type=submit]")
                await page.wait_for_url(f"**/exchanges?*q={INS}*")
                rows = await page.locator("table.list tbody tr").all_inner_texts()
                assert len(rows) == 2 and any("DOC1" in r for r in rows) and any("ADT1" in r for r in rows)

                # the overview, refreshing itself every 2 s, shows the DMP failing after one refresh
                await page.goto(f"{base}/?refresh=2")
                start = time.monotonic()
                await page.wait_for_selector("#dest-dmp.dest-failing", timeout=15_000)
                row = await page.inner_text("#dest-dmp")
                assert "failing" in row and "100 % of" in row
                assert time.monotonic() - start < 10  # the first load or the one refresh after it
                oldest = await page.inner_text("#dest-dmp td:last-child")
                assert oldest != "-"  # the oldest queued item's age is shown
            finally:
                await browser.close()
    finally:
        await testing.stop_gateway(gw)


async def test_bulk_release_from_the_held_worklist(tmp_path: Path) -> None:
    async_api = browser_or_skip()
    gw = await testing.start_gateway(builders.settings(tmp_path, api={"tokens": f"operator:alice:{OP}"}), token=OP)
    try:
        prov = (FIXTURES / "mdm_t02_initial.hl7").read_bytes().replace(b"|N|VALI", b"|N|PROV")
        for n in range(3):
            await gw.mllp.send(with_control_id(prov, f"H{n}"))
        base = gw.service.addresses["http"]
        async with async_api.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
            try:
                page = await browser.new_page()
                page.set_default_timeout(15_000)
                await login(page, base)
                await page.goto(f"{base}/")
                assert "Held (3)" in await page.inner_text("main")
                await page.fill("#bulk-release input[name=reason]", "identities checked at the desk")
                await page.click("#bulk-release button[type=submit]")
                await page.wait_for_url(f"{base}/")
                assert "Released 3; refused 0." in await page.inner_text(".flash")
                assert "Held (0)" in await page.inner_text("main")
            finally:
                await browser.close()
        audit = await gw.service.journal.audit_entries()
        assert [a.actor for a in audit if a.action == "release"] == ["operator:alice"] * 3
    finally:
        await testing.stop_gateway(gw)
