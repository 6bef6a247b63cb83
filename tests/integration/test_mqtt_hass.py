"""Home Assistant discovery against a real Mosquitto, end to end.

A TCP client registers a sender whose REGISTER_SENDER meta describes one of its
events; ``mosquitto_sub`` plays Home Assistant: it must see the retained
discovery config, then the state on the config's ``state_topic``, and the
config removed (an empty retained message) when the sender goes.
"""

from __future__ import annotations

import json
from pathlib import Path

from mosquitto import Mosquitto
from procs import Gateway, until

from sig.routers.client import AsyncClientRouter

WAIT = 15.0

CONFIG = """
[mqtt]
url = "{url}"
gateway_id = "house"
discovery = true
"""


async def test_a_described_sender_appears_in_home_assistant_with_no_yaml(tmp_path: Path) -> None:
    with Mosquitto(tmp_path) as broker:
        conf = tmp_path / "sig.toml"
        conf.write_text(CONFIG.format(url=broker.url))
        gw = Gateway(0, "--no-timer", "--no-discovery", "--config", str(conf))
        try:
            gw.wait_log("mqtt: connected", timeout=WAIT)
            ha = broker.sub("homeassistant/#", "sig/+/+")
            c = AsyncClientRouter("127.0.0.1", gw.port, name="thermo-app")
            await c.connect()
            describe = {"temperature": {"unit": "°C", "device_class": "temperature"}}
            thermo = await c.add_sender("thermo", ["temperature", "raw"], describe=describe)

            def configs() -> list[tuple[str, str]]:
                out = []
                for line in list(ha.lines):
                    topic, _, payload = line.partition(" ")
                    if topic.startswith("homeassistant/") and payload:
                        out.append((topic, payload))
                return out

            await until(configs, WAIT, "a discovery config")
            [(topic, payload)] = configs()  # one described event: one config
            assert topic.startswith("homeassistant/sensor/") and topic.endswith("/config")
            config = json.loads(payload)
            assert config["unit_of_measurement"] == "°C"
            assert config["device_class"] == "temperature"
            state_topic = config["state_topic"]
            assert state_topic == "sig/thermo/temperature"

            # No sig listener anywhere: Home Assistant is the listener of a described event.
            thermo.trigger("temperature", 21.5)
            thermo.trigger("raw", 1)  # not described: stays on this gateway
            await until(lambda: f"{state_topic} 21.5" in ha.lines, WAIT, "the state")
            assert not [x for x in ha.lines if x.startswith("sig/thermo/raw")]

            await c.remove_sender("thermo")
            # the config is removed: an empty retained message, which mosquitto_sub shows as (null)
            await until(lambda: f"{topic} (null)" in ha.lines, WAIT, "the config removed")
            await c.close()
        finally:
            gw.stop()
