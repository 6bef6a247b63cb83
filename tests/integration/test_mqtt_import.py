"""``[[mqtt.import]]`` against a real Mosquitto: plain MQTT devices as sig senders.

``mosquitto_pub`` plays the Zigbee2MQTT / Tasmota device; a sig listener on
the gateway sees it like any other sender. Bad input is counted on the
bridge's ``sig links`` row, never fatal.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mosquitto import Mosquitto
from procs import Gateway, until

from sig.routers.client import AsyncClientRouter

WAIT = 15.0

CONFIG = """
[mqtt]
url = "{url}"
gateway_id = "imp"

[[mqtt.import]]
topic = "zigbee2mqtt/+"
sender = "{{1}}"
event = "state"

[[mqtt.import]]
topic = "tasmota/#"
sender = "tasmota-{{1}}"
event = "{{2}}"
payload = "raw"
"""


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    with Mosquitto(tmp_path) as broker:
        conf = tmp_path / "sig.toml"
        conf.write_text(CONFIG.format(url=broker.url))
        gw = Gateway(0, "--no-timer", "--no-discovery", "--config", str(conf))
        gw.wait_log("mqtt: connected", timeout=WAIT)
        c = AsyncClientRouter("127.0.0.1", gw.port, name="importer-test")
        await c.connect()
        try:
            yield {"gw": gw, "c": c, "broker": broker}
        finally:
            await c.close()
            gw.stop()


async def row(c: AsyncClientRouter) -> dict[str, Any]:
    return next(r for r in await c.list_links() if str(r["link"]).startswith("mqtt:"))


async def counter(c: AsyncClientRouter, key: str, least: int) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while int((await row(c))[key]) < least:
        assert asyncio.get_running_loop().time() < deadline, f"{key} < {least}"
        await asyncio.sleep(0.02)


async def test_mosquitto_pub_into_an_imported_topic_reaches_a_sig_listener(
    rig: dict[str, Any],
) -> None:
    c: AsyncClientRouter = rig["c"]
    broker: Mosquitto = rig["broker"]
    seen: list[tuple[str, str, Any]] = []
    await c.add_listener(lambda i, d: seen.append((i["sender"], i["event"], d)), "lamp", None)
    broker.pub("zigbee2mqtt/lamp", '{"state": "ON", "brightness": 200}')
    await until(lambda: [s for s in seen if s[1] == "state"], WAIT, "lamp's state")
    assert [(s, e) for s, e, _ in seen] == [("lamp", "#connect"), ("lamp", "state")]
    assert seen[0][2]["events"] == ["state"] and seen[0][2]["requests"] == []
    assert seen[1][2] == {"state": "ON", "brightness": 200}
    assert "lamp" in await c.list_senders()
    broker.pub("zigbee2mqtt/lamp", None, retain=True)  # a retained empty message: gone
    await until(lambda: seen[-1][1] == "#disconnect", WAIT, "lamp's #disconnect")
    assert "lamp" not in await c.list_senders()


async def test_raw_payloads_and_templated_events(rig: dict[str, Any]) -> None:
    c: AsyncClientRouter = rig["c"]
    seen: list[tuple[str, str, Any]] = []
    listen = (lambda i, d: seen.append((i["sender"], i["event"], d)), "tasmota-plug1", None)
    await c.add_listener(*listen)
    rig["broker"].pub("tasmota/plug1/POWER", "ON")
    await until(lambda: [s for s in seen if s[1] == "POWER"], WAIT, "the plug's POWER")
    assert seen[-1] == ("tasmota-plug1", "POWER", "ON")


async def test_malformed_payloads_and_unmapped_topics_are_dropped_and_counted(
    rig: dict[str, Any],
) -> None:
    c: AsyncClientRouter = rig["c"]
    broker: Mosquitto = rig["broker"]
    seen: list[Any] = []
    await c.add_listener(lambda i, d: seen.append((i["sender"], i["event"], d)), None, None)
    broker.pub("zigbee2mqtt/sensor", "not json {")
    await counter(c, "dropped_malformed", 1)
    broker.pub("tasmota/only-one-level", "x")  # event "{2}": no second level to name it
    await counter(c, "ignored_unmapped", 1)
    broker.pub("zigbee2mqtt/sensor", "21.5")  # the bridge goes on: a good one passes
    await until(lambda: ("sensor", "state", 21.5) in seen, WAIT)
    assert not [s for s in seen if s[0] == "tasmota-only-one-level"]
    assert (await row(c))["mqtt"] == "connected"
