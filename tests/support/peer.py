"""A scriptable sig client process for the network tests (sync ClientRouter).

Run as ``python tests/support/peer.py --port PORT [--name NAME] [--seed JSON]``.
It reads one JSON command per line on stdin and prints one JSON line per
outcome or event on stdout:

* ``{"ev": "ready"}`` once the first connection is up (or failed);
* ``{"ev": "connected"}`` / ``{"ev": "disconnected"}`` from the hooks;
* ``{"ev": "refused", "sender": S, "error": "ClassName", "message": "..."}`` from
  ``on_sender_refused``;
* ``{"ev": "event", "tag": T, "sender": S, "event": E, "data": D}`` per delivery;
* ``{"ev": "handling", "sender": S, "method": M}`` when a handler starts;
* ``{"id": N, "ok": true, "result": R}`` or
  ``{"id": N, "ok": false, "error": "ClassName", "message": "..."}`` per command.

Commands (``op``): ``sender`` (name, events, methods: {method or "*": behaviour}),
``unsender``, ``listen`` (tag, sender, event), ``unlisten`` (tag), ``trigger``
(sender, event, data), ``request`` (sender, method, params, timeout; with
``"background": true`` it runs on its own thread), ``senders``, ``stats``,
``close``. Handler behaviours: ``"echo"`` returns the params, ``"method"``
(default handler) returns ``[method, params]``, ``{"return": X}``,
``{"raise": "text"}``, ``{"block": seconds}`` prints ``handling`` then sleeps.

``--seed JSON`` installs registrations made inside ``on_connected`` (the seed's
style): ``{"senders": [[name, [events]]], "listens": [[tag, sender, event]]}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import sig

_out_lock = threading.Lock()


def emit(**fields: Any) -> None:
    line = json.dumps(fields, default=repr)
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def make_handler(method: str, behaviour: Any) -> Callable[..., Any]:
    def run(params: Any, actual: str = method) -> Any:
        emit(ev="handling", method=actual, params=params)
        if behaviour == "echo":
            return params
        if behaviour == "method":
            return [actual, params]
        if isinstance(behaviour, dict):
            if "return" in behaviour:
                return behaviour["return"]
            if "raise" in behaviour:
                raise ValueError(behaviour["raise"])
            if "block" in behaviour:
                time.sleep(float(behaviour["block"]))
                return "late"
        raise RuntimeError(f"bad behaviour {behaviour!r}")

    if method == "*":
        return lambda m, params: run(params, m)
    return run


class Peer:
    def __init__(self, client: sig.ClientRouter) -> None:
        self.client = client
        self.listeners: dict[str, Callable[[dict[str, Any], Any], None]] = {}

    def listener(self, tag: str) -> Callable[[dict[str, Any], Any], None]:
        if tag not in self.listeners:

            def callback(info: dict[str, Any], data: Any) -> None:
                emit(ev="event", tag=tag, sender=info["sender"], event=info["event"], data=data)

            self.listeners[tag] = callback
        return self.listeners[tag]

    def run(self, cmd: dict[str, Any]) -> Any:
        op = cmd["op"]
        c = self.client
        if op == "sender":
            methods = cmd.get("methods") or {}
            handlers = {(None if m == "*" else m): make_handler(m, b) for m, b in methods.items()}
            c.add_sender(cmd["name"], cmd["events"], handlers)
            return None
        if op == "unsender":
            return c.remove_sender(cmd["name"])
        if op == "listen":
            c.add_listener(self.listener(cmd["tag"]), cmd.get("sender"), cmd.get("event"))
            return None
        if op == "unlisten":
            callback = self.listeners[cmd["tag"]]
            return c.remove_listener(callback, cmd.get("sender"), cmd.get("event"))
        if op == "trigger":
            sender = c.get_sender(cmd["sender"])
            assert sender is not None, cmd
            for _ in range(int(cmd.get("times", 1))):
                sender.get_signal(cmd["event"]).trigger(cmd.get("data"))
            return None
        if op == "request":
            return c.request(cmd["sender"], cmd["method"], cmd.get("params"), cmd.get("timeout"))
        if op == "senders":
            return c.list_senders()
        if op == "stats":
            return c.stats
        if op == "connected":
            return c.is_connected
        if op == "close":
            c.close()
            return None
        raise ValueError(f"unknown op {op!r}")

    def handle(self, cmd: dict[str, Any]) -> None:
        try:
            result = self.run(cmd)
        except Exception as exc:
            emit(id=cmd.get("id"), ok=False, error=type(exc).__name__, message=str(exc))
        else:
            emit(id=cmd.get("id"), ok=True, result=result)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default=None)
    parser.add_argument("--seed", default=None, help="registrations made in on_connected")
    parser.add_argument("--keepalive", type=float, default=10.0)
    args = parser.parse_args()

    client = sig.ClientRouter(
        host=args.host,
        port=args.port,
        name=args.name,
        backoff=sig.Backoff(initial=0.1, maximum=0.5, jitter=0.1),
        request_timeout=10.0,
        keepalive=args.keepalive,
    )
    peer = Peer(client)
    seed = json.loads(args.seed) if args.seed else None

    def on_connected() -> None:
        if seed is not None:
            for name, events in seed.get("senders", []):
                client.addRemoteSender(name, events, {"who": lambda params, n=name: n})
            for tag, sender, event in seed.get("listens", []):
                client.addRemoteListener(peer.listener(tag), sender, event)
        emit(ev="connected")

    client.on_connected = on_connected
    client.on_disconnected = lambda: emit(ev="disconnected")
    client.on_sender_refused = lambda name, exc: emit(
        ev="refused", sender=name, error=type(exc).__name__, message=str(exc)
    )
    client.connect()
    emit(ev="ready")
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        cmd = json.loads(line)
        if cmd.get("background"):
            threading.Thread(target=peer.handle, args=(cmd,), daemon=True).start()
        else:
            peer.handle(cmd)
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
