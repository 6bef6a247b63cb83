"""A headless Debian chromium driven by Selenium, and a live gateway for it to look at.

Nothing is downloaded: Selenium is given the paths of Debian's ``chromium`` and
``chromium-driver`` (so Selenium Manager is never run), and chromium runs with
every background fetch turned off and a fresh profile per driver.

:class:`LiveGateway` runs a ``ServerRouter`` with a serial port, its HTTP side
and a ``sig device-sim`` (the emulator class, on the other end of a socat pty)
on an event loop in a background thread, so a synchronous Selenium test can
trigger a device event at the moment it chooses.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from sig.routers.gateway import ServerRouter
from sig.routers.http import HttpSide
from sig.routers.serial import open_serial_links
from sig.tools.device_sim import DeviceSim

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)

T = TypeVar("T")


def chromium(profile: Path, size: tuple[int, int] = (1280, 1000)) -> webdriver.Chrome:
    """A headless chromium with a fresh profile in ``profile``, its window ``size`` pixels."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={size[0]},{size[1]}")
    options.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


class LiveGateway:
    """Gateway + serial port + HTTP side + device emulator, on a loop in a thread."""

    def __init__(self, gateway_port: Path, device_port: Path, device: str = "sensor1") -> None:
        self.gateway_port = gateway_port
        self.device_port = device_port
        self.device_name = device
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.router: ServerRouter
        self.http: HttpSide
        self.device: DeviceSim

    def start(self) -> LiveGateway:
        self.thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        self.router = ServerRouter("127.0.0.1", 0)
        await self.router.start()
        await open_serial_links(self.router, [str(self.gateway_port)])
        self.http = HttpSide(self.router, "127.0.0.1", 0)
        await self.http.start()
        self.device = DeviceSim(
            str(self.device_port), name=self.device_name, interval=0, out=lambda line: None
        )
        await self.device.start()

    @property
    def url(self) -> str:
        return self.http.url

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run ``coro`` on the gateway's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(*args)`` on the gateway's loop (the gateway is not thread-safe)."""

        async def call() -> T:
            return fn(*args)

        return self.run(call())

    def stop(self) -> None:
        async def stop() -> None:
            await self.device.stop()
            await self.http.stop()
            await self.router.stop()

        try:
            self.run(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10.0)
            self.loop.close()
