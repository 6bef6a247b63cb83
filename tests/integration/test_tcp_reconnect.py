"""Gateway restarts: clients reconnect and re-register by themselves.

Two styles of client code must both heal without duplicates: registering once
up front (the client replays its registry) and the seed's style, registering
again inside ``on_connected`` after every connect (idempotent registrations).
"""

from __future__ import annotations

import json
from typing import Any

from procs import Gateway, Peer, wait_until


def count_connected(peer: Peer) -> int:
    return sum(1 for m in peer.messages() if m.get("ev") == "connected")


def check_flow(upfront: Peer, seed: Peer, gateway_peer: Peer, rnd: int) -> None:
    """Events both ways are delivered exactly once; requests both ways answer."""
    start_up, start_seed = upfront.mark(), seed.mark()
    for i in range(3):
        upfront.call("trigger", sender="upfront", event="tick", data=[rnd, i])
        seed.call("trigger", sender="seedS", event="tick", data=[rnd, i])
    seed.wait_event("fromA", "tick", "upfront", data=[rnd, 2])
    upfront.wait_event("fromB", "tick", "seedS", data=[rnd, 2])
    # The trailing barrier: one more event on the same path, then count.
    upfront.call("trigger", sender="upfront", event="tick", data=[rnd, "end"])
    seed.call("trigger", sender="seedS", event="tick", data=[rnd, "end"])
    seed.wait_event("fromA", "tick", "upfront", data=[rnd, "end"])
    upfront.wait_event("fromB", "tick", "seedS", data=[rnd, "end"])
    got_b = [m["data"] for m in seed.events("fromA", start_seed)]
    got_a = [m["data"] for m in upfront.events("fromB", start_up)]
    expected = [[rnd, 0], [rnd, 1], [rnd, 2], [rnd, "end"]]
    assert got_b == expected
    assert got_a == expected
    assert upfront.call("request", sender="seedS", method="who") == "seedS"
    assert seed.call("request", sender="upfront", method="get", params=rnd) == rnd
    senders = gateway_peer.call("request", sender="$gateway", method="senders")
    assert sorted(senders) == ["seedS", "upfront"]
    links = gateway_peer.call("request", sender="$gateway", method="links")
    by_peer: dict[str, Any] = {x["peer"]: x for x in links}
    assert by_peer["up"]["senders"] == ["upfront"] and by_peer["up"]["listeners"] == 1
    assert by_peer["seed"]["senders"] == ["seedS"] and by_peer["seed"]["listeners"] == 1


def test_gateway_restart_heals_both_registration_styles() -> None:
    gw = Gateway()
    port = gw.port
    seed_conf = {"senders": [["seedS", ["tick"]]], "listens": [["fromA", "upfront", "tick"]]}
    upfront = Peer(port, "up")
    seed = Peer(port, "seed", "--seed", json.dumps(seed_conf))
    try:
        upfront.call("sender", name="upfront", events=["tick"], methods={"get": "echo"})
        upfront.call("listen", tag="fromB", sender="seedS", event="tick")
        wait_until(lambda: count_connected(seed) == 1, what="seed-style registrations")
        check_flow(upfront, seed, upfront, 0)
        for rnd in (1, 2):
            mark = upfront.mark()
            assert gw.stop() == 0
            upfront.wait_msg(lambda m: m.get("ev") == "disconnected", start=mark)
            gw = Gateway(port)

            def both(n: int = rnd + 1) -> bool:
                return count_connected(upfront) == n and count_connected(seed) == n

            wait_until(both, what="both clients reconnected")
            check_flow(upfront, seed, seed, rnd)
        assert upfront.call("stats")["reconnects"] == 2
    finally:
        upfront.close()
        seed.close()
        gw.stop()
