"""Listen to events on a sig gateway and print them.

    python examples/generic_client_listener.py            # asks for sender and event
    python examples/generic_client_listener.py --sender timer --event tick

Type ``None`` (or nothing) for the sender, the event, or both:
``(sender, None)`` is every event of that sender (sender broadcast),
``(None, "#channel")`` a channel from any sender, ``(None, None)`` everything
that passes the router (router broadcast).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any

import sig


def ask(prompt: str) -> str | None:
    answer = input(prompt).strip()
    return None if answer in ("", "None") else answer


def name_arg(value: str) -> str | None:
    return None if value == "None" else value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--sender", type=name_arg, help="sender name, or None for any")
    parser.add_argument("--event", type=name_arg, help="event name, or None for any")
    parser.add_argument("--count", type=int, default=0, help="exit after N events (0: never)")
    args = parser.parse_args()
    given = "--sender" in sys.argv or "--event" in sys.argv
    sender = args.sender if given else ask("Sender name (None for any): ")
    event = args.event if given else ask("Event name (None for any): ")

    done = threading.Event()
    received = 0

    def show(info: dict[str, Any], data: Any) -> None:
        nonlocal received
        print(f"[{info['sender']}] {info['event']}: {json.dumps(data, default=repr)}", flush=True)
        received += 1
        if args.count and received >= args.count:
            done.set()

    client = sig.ClientRouter(host=args.host, port=args.port, name="example-listener")
    try:
        client.connect(auto_reconnect=True)  # keeps listening across gateway restarts
        client.add_listener(show, sender, event)
        print(f"listening to ({sender!r}, {event!r})", flush=True)
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
