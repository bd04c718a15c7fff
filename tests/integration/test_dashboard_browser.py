"""The dashboard in a real headless Chromium (Playwright), against a running gateway.

Skipped when Playwright or /usr/bin/chromium is absent (``pip install playwright``;
``apt-get install chromium``; ``playwright install`` is not needed).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.testing import settings_for, start_gateway, stop_gateway, with_control_id

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2"
OP = "op-token-0123456789"
VIEW = "view-token-0123456789"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


async def test_operator_finds_releases_and_replays_an_exchange(tmp_path: Path) -> None:
    async_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
    if not CHROMIUM.exists():
        pytest.skip(reason=f"{CHROMIUM} is absent (apt-get install chromium)")

    gw = await start_gateway(settings_for(tmp_path / "data", f"operator:alice:{OP},viewer:{VIEW}"), token=OP)
    try:
        await gw.mllp.send(with_control_id((FIXTURES / "mdm_t02_initial.hl7").read_bytes(), "015"))
        await gw.mllp.send(with_control_id((FIXTURES / "mdm_t02_initial.hl7").read_bytes(), "016"))
        base = gw.service.addresses["http"]
        requests: list[str] = []
        async with async_api.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
            try:
                page = await browser.new_page()
                page.set_default_timeout(10_000)
                page.on("request", lambda r: requests.append(r.url))

                await page.goto(f"{base}/exchanges")
                assert "/login" in page.url  # no session: sent to the login form
                await page.fill("input[name=token]", "wrong-token-123")
                await page.click("button[type=submit]")
                assert "not valid" in await page.inner_text("main")
                await page.fill("input[name=token]", OP)
                await page.click("button[type=submit]")
                await page.wait_for_url(f"{base}/exchanges")
                assert "alice" in await page.inner_text("header")

                await page.fill("input[name=q]", "015")
                await page.click("form.filters button[type=submit]")
                await page.wait_for_url("**/exchanges?*q=015*")
                rows = page.locator("table.list tbody tr")
                assert await rows.count() == 1
                assert "015" in await rows.first.inner_text()
                await rows.first.locator("a").click()
                await page.wait_for_url("**/exchanges/*")
                exchange_url = page.url

                timeline = await page.inner_text("table.timeline")
                assert "received" in timeline and "held" in timeline
                assert await page.inner_text("#exchange-status") == "held"

                await page.fill("input[name=reason]", "identity checked with the patient")
                await page.click("#release")
                await page.wait_for_url(exchange_url)
                assert "Released" in await page.inner_text(".flash")
                for _ in range(50):  # the dispatcher delivers to the file outbox within a few polls
                    await page.goto(exchange_url)
                    if await page.inner_text("#exchange-status") == "delivered":
                        break
                    await page.wait_for_timeout(100)
                assert await page.inner_text("#exchange-status") == "delivered"
                assert await page.locator("tr.attempt").count() == 1
                assert "Delivery attempt 1 → outbox" in await page.inner_text("table.timeline")

                await page.click("#replay")
                await page.wait_for_url("**/exchanges/*")
                assert page.url != exchange_url
                assert "Replayed as exchange" in await page.inner_text(".flash")
                new_timeline = await page.inner_text("table.timeline")
                assert "replay-of" in new_timeline and "received" in new_timeline
                await page.click("table.timeline a")  # back to the original through the timeline link
                assert page.url == exchange_url
                assert "replayed" in await page.inner_text("table.timeline")

                await page.goto(f"{base}/")
                assert await page.inner_text("#count-held") == "2"  # 016 and the replay of 015
                await page.goto(f"{base}/identities?held=1")
                assert "279035121518989" in await page.inner_text("table.list")
            finally:
                await browser.close()
        assert all(u.startswith(base) for u in requests), "the dashboard must not load external resources"
    finally:
        await stop_gateway(gw)
