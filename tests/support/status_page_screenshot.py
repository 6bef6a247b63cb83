"""Take docs/status-page.png: the status page of a gateway with real traffic.

Usage: ``.venv/bin/python tests/status_page_screenshot.py [OUT.png] [SECONDS]``

Two ``sig device-sim`` devices on socat ptys, the demo timer, and a TCP client
whose sender triggers in bursts run for SECONDS (default 20) so the sparklines
have a shape; then the request form calls ``sensor1.get_temp`` and headless
chromium saves the page.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from browser import LiveGateway, chromium
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from socat import SocatPairs

from sig.routers.client import AsyncClientRouter
from sig.tools.cli import demo_timer
from sig.tools.device_sim import DeviceSim


async def traffic(live: LiveGateway, port: Path, seconds: float) -> AsyncClientRouter:
    """A second device, the demo timer and a bursty TCP sender, for ``seconds``."""
    router = live.router
    from sig.routers.serial import open_serial_links

    await open_serial_links(router, [str(port)])
    router.spawn(demo_timer(router, "timer", "tick", 1.0), "demo-timer")
    client = AsyncClientRouter("127.0.0.1", router.port, name="kitchen-app")
    await client.connect()
    kitchen = await client.add_sender("kitchen", ["door", "light"], {"toggle": lambda p: True})
    await client.add_listener(lambda info, data: None, "sensor1", None)
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    n = 0
    while loop.time() < end:
        n += 1
        kitchen.trigger("light", {"on": n % 2 == 0, "level": n % 100})
        if n % 7 < 3:
            kitchen.trigger("door", {"open": n % 2 == 1})
        await asyncio.sleep(0.15 if (n // 20) % 2 else 0.4)
        if n % 25 == 0:
            live.device.trigger("temperature", {"n": n, "value": 21.5 + (n % 9) / 10})
    return client


def main(out: str = "docs/status-page.png", seconds: float = 20.0) -> None:
    out = str(Path(out).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # relative pty paths: the picture shows no path of this machine
        shoot(out, seconds, Path(tmp))


def shoot(out: str, seconds: float, tmp: Path) -> None:
    with SocatPairs(Path(".")) as pairs:
        one, two = pairs.pair("ttyUSB0"), pairs.pair("ttyACM0")
        live = LiveGateway(one.a, one.b).start()
        live.device.interval = 0.7
        second = DeviceSim(
            str(two.b), name="greenhouse", events=["humidity", "soil"], interval=0.3,
            out=lambda line: None,
        )  # fmt: skip
        live.run(second.start())
        driver = chromium(tmp / "profile", (1280, 1150))
        try:
            driver.get(live.url)
            client = live.run(traffic(live, two.a, seconds), timeout=seconds + 30)
            for field, value in (("req-sender", "sensor1"), ("req-method", "get_temp")):
                driver.find_element(By.ID, field).send_keys(value)
            driver.find_element(By.ID, "req-send").click()
            WebDriverWait(driver, 10).until(
                lambda d: d.find_element(By.ID, "req-outcome").text.startswith("ok")
            )
            driver.save_screenshot(out)
            print(f"saved {out}")
            live.run(client.close())
        finally:
            driver.quit()
            live.run(second.stop())
            live.stop()


if __name__ == "__main__":
    main(*sys.argv[1:2], *(float(a) for a in sys.argv[2:3]))
