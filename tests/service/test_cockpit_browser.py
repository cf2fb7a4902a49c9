"""The cockpit in a real browser: Debian's chromium (headless) driven by Playwright.

The page is opened, it records every bar stream of the fixtures' symbols, a burst replay is
started from the replay form, the job reaches ``completed`` in the jobs table, candles are
drawn (a screenshot is saved, and the chart area holds up- and down-candle pixels), and the
WebSocket messages the page recorded hash to the replay's parity node's bars hash (seed 000).

Nothing downloads a browser: Playwright is pointed at /usr/bin/chromium, which ``.ci/run``
installs with apt-get when missing. Without it the test fails, naming the package.
"""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import pytest

from tests.service.helpers import parity_bars_hash

pytestmark = pytest.mark.ray

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "out" / "test-artifacts" / "cockpit.png"
UP, DOWN = (0x13, 0x73, 0x33), (0xC5, 0x22, 0x1F)  # candle colours of static/cockpit.js


def colour_pixels(png: bytes, colour: tuple[int, int, int], tolerance: int = 24) -> int:
    """Pixels of ``png`` within ``tolerance`` of ``colour`` in every channel."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    return int(np.all(np.abs(pixels - np.array(colour, dtype=np.int16)) <= tolerance, axis=-1).sum())


def test_cockpit_replays_from_the_form_draws_candles_and_its_stream_matches_the_parity_node(ray_service):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    server, _ = ray_service
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(server.url + "/")
            page.wait_for_function("window.cockpit && document.querySelectorAll('#replay-symbols input').length == 2")
            page.evaluate("() => cockpit.ready")
            page.evaluate("() => cockpit.recordAll(['AMZN', 'BTCUSDT'], ['1s', '1m', '5m', '15m', '1h', '1d'])")
            assert page.input_value("#chart-symbol") == "AMZN" and page.input_value("#chart-timeframe") == "1m"
            page.select_option("#replay-speed", "0")  # burst
            page.click("#replay-start-button")
            page.wait_for_function("() => cockpit.lastJob", timeout=30_000)
            run_id = page.evaluate("() => cockpit.lastJob")
            status = page.locator(f'#replay-jobs tr[data-run-id="{run_id}"] td[data-testid="job-status"]')
            status.filter(has_text="completed").wait_for(timeout=240_000)
            count, deadline = -1, time.monotonic() + 30
            while time.monotonic() < deadline:  # until the last bars of the burst have arrived
                now = page.evaluate("() => Object.values(cockpit.recorded).reduce((n, r) => n + r.length, 0)")
                if now == count:
                    break
                count = now
                time.sleep(1.0)
            assert page.evaluate("() => cockpit.chartBars") == 387  # AMZN 1m candles, all confirmed
            page.evaluate("() => document.querySelector('#chart').scrollIntoView()")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            chart_png = page.locator("#chart").screenshot()
            recorded = page.evaluate("() => cockpit.recorded")
            parity = page.evaluate(f"() => fetch('/v1/parity/jobs/{run_id}').then(r => r.json())")
            assert not errors, errors
        finally:
            browser.close()
    shutil.copyfile(SCREENSHOT, SCREENSHOT.with_name("cockpit-last.png"))
    assert colour_pixels(chart_png, UP) > 500 and colour_pixels(chart_png, DOWN) > 500  # candles, both ways
    texts = [text for key in sorted(recorded) for text in recorded[key]]
    bars = parity["streams"]["bars"]
    assert parity["status"] == "completed" and bars["messages"] == 6785
    assert parity_bars_hash(texts) == (bars["messages"], bars["hash"])
