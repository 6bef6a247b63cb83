"""The status page in a real headless browser (Debian's chromium, driven by Selenium).

A gateway with a ``sig device-sim`` behind a socat pty; the page must show the
device's sender, show a device event the test triggers while the page is open
(without a reload), run requests from its form, and render hostile names as
text. Every wait is WebDriverWait on a condition, never a sleep.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import LiveGateway, chromium
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from socat import SocatPairs

DEADLINE = 10.0  #: seconds any one condition may take (a loaded CI machine)
POLL = 0.02  #: seconds between two checks of a condition


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    browser = chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def gateway(socat: SocatPairs) -> Iterator[LiveGateway]:
    pair = socat.pair("dev")
    live = LiveGateway(pair.a, pair.b).start()
    try:
        yield live
    finally:
        live.stop()


def wait(driver: WebDriver) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, DEADLINE, poll_frequency=POLL)


def texts(driver: WebDriver, css: str) -> list[str]:
    """The text content of every match (all of it, also what the layout clips).

    Read in one script, in one go: the page rebuilds its tables every second,
    so element handles kept across two calls may point at rows already replaced.
    """
    script = "return Array.from(document.querySelectorAll(arguments[0]), e => e.textContent)"
    found: list[str] = driver.execute_script(script, css)
    return found


def attributes(driver: WebDriver, css: str, name: str) -> list[str]:
    """Attribute ``name`` of every match, read in one script like :func:`texts`."""
    script = (
        "return Array.from(document.querySelectorAll(arguments[0]),"
        " e => e.getAttribute(arguments[1]))"
    )
    found: list[str] = driver.execute_script(script, css, name)
    return found


def test_page_shows_the_device_and_its_new_event_live(
    driver: WebDriver, gateway: LiveGateway, tmp_path: Path
) -> None:
    driver.get(gateway.url)
    wait(driver).until(lambda d: "sensor1" in texts(d, "#senders td.sender-name"))
    wait(driver).until(lambda d: d.find_element(By.ID, "conn").text == "live")
    link = f"serial:{gateway.gateway_port}"
    assert attributes(driver, "#links tbody tr", "data-link") == [link]
    (row,) = texts(driver, "#links tbody tr")
    assert "open" in row and "sensor1" in row
    assert attributes(driver, "#senders .event-row", "data-event") == ["temperature"]
    assert len(texts(driver, "#senders .event-row canvas.spark")) == 1
    driver.execute_script("window.sigSamePage = 42")
    started = time.monotonic()
    gateway.call(gateway.device.trigger, "temperature", {"n": 987654, "value": 19.25})
    wait(driver).until(
        lambda d: any("987654" in t for t in texts(d, '#tail li[data-sender="sensor1"]'))
    )
    seen_after = time.monotonic() - started
    print(f"device event on the page {seen_after * 1000:.0f} ms after the trigger")
    (entry,) = texts(driver, '#tail li[data-event="temperature"]')
    assert "sensor1:temperature" in entry and "19.25" in entry
    assert driver.execute_script("return window.sigSamePage") == 42  # no reload
    # the trigger shows in the sender's counters and in its sparkline's count
    wait(driver).until(
        lambda d: any("1/min" in t for t in texts(d, '#senders tr[data-sender="sensor1"]'))
    )
    assert driver.save_screenshot(str(tmp_path / "status-page.png"))


def test_request_form_shows_the_result_and_a_typed_error(
    driver: WebDriver, gateway: LiveGateway
) -> None:
    driver.get(gateway.url)
    wait(driver).until(lambda d: "sensor1" in texts(d, "#senders td.sender-name"))
    outcome = driver.find_element(By.ID, "req-outcome")

    def send(sender: str, method: str, params: str) -> str:
        fields = {"req-sender": sender, "req-method": method, "req-params": params}
        for field, value in fields.items():
            box = driver.find_element(By.ID, field)
            box.clear()
            box.send_keys(value)
        driver.execute_script("document.getElementById('req-outcome').textContent = ''")
        driver.find_element(By.ID, "req-send").click()
        wait(driver).until(lambda d: outcome.text not in ("", "…"))
        return outcome.text

    assert send("sensor1", "get_temp", "null") == "ok: 21.5"
    assert outcome.get_attribute("class") == "outcome ok"
    text = send("sensor1", "calibrate", '{"offset": 2}')
    assert text.startswith("ok: ") and '"calibrate"' in text and '"offset": 2' in text
    text = send("nobody", "get_temp", "null")
    assert text.startswith("NoSuchSender (NO_SUCH_SENDER): ")
    assert outcome.get_attribute("class") == "outcome error"
    assert send("sensor1", "get_temp", "{oops").startswith("params are not valid JSON")


HOSTILE_SENDER = '<img src=x onerror="window.sigPwned=1">'
HOSTILE_EVENT = "<script>window.sigPwned=2</script>"
HOSTILE_METHOD = "<b>bold</b>"
HOSTILE_DATA = "<svg onload=window.sigPwned=3>"


def test_hostile_names_and_data_are_rendered_as_text(
    driver: WebDriver, gateway: LiveGateway
) -> None:
    handlers = {HOSTILE_METHOD: lambda params: None}
    sender = gateway.call(gateway.router.add_sender, HOSTILE_SENDER, [HOSTILE_EVENT], handlers)
    driver.get(gateway.url)
    wait(driver).until(lambda d: HOSTILE_SENDER in texts(d, "#senders td.sender-name"))
    gateway.call(sender.trigger, HOSTILE_EVENT, HOSTILE_DATA)
    wait(driver).until(lambda d: any(HOSTILE_DATA in t for t in texts(d, "#tail li")))
    (row,) = [t for t in texts(driver, "#senders tr[data-sender]") if HOSTILE_SENDER in t]
    assert HOSTILE_EVENT in row and HOSTILE_METHOD in row
    (tail,) = [t for t in texts(driver, "#tail li") if HOSTILE_DATA in t]
    assert f"{HOSTILE_SENDER}:{HOSTILE_EVENT}" in tail
    for tag in ("img", "svg", "b"):
        assert driver.find_elements(By.TAG_NAME, tag) == [], tag
    scripts = driver.find_elements(By.TAG_NAME, "script")
    assert [s.get_attribute("src") for s in scripts] == [gateway.url + "static/app.js"]
    assert driver.execute_script("return window.sigPwned") is None
