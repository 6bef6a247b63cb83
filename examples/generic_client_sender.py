"""Register a sender on a sig gateway and trigger its events.

    python examples/generic_client_sender.py --name mysender --events tick,tac

Each interval it triggers every event in turn with a counter as data, and it
answers the request ``get_count`` (try ``sig request mysender get_count``).
``--count N`` stops after N rounds.
"""

from __future__ import annotations

import argparse
import sys
import time

import sig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--name", default="mysender", help="sender name")
    parser.add_argument("--events", default="tick,tac", help="comma-separated event names")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between rounds")
    parser.add_argument("--count", type=int, default=0, help="rounds to run (0: forever)")
    args = parser.parse_args()
    events = [e for e in args.events.split(",") if e]
    sig.setup_logger(sig.SimpleLogger(level=sig.LOG_LEVELS.LEVEL_INFO))

    count = 0
    client = sig.ClientRouter(host=args.host, port=args.port, name=f"example-{args.name}")
    try:
        client.connect(auto_reconnect=False)
    except sig.ConnectError as exc:
        print(f"cannot reach the gateway at {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    with client:
        try:
            sender = client.add_sender(args.name, events, {"get_count": lambda params: count})
        except sig.DuplicateSenderError as exc:
            print(f"sender {args.name!r} refused: {exc}", file=sys.stderr)
            return 1
        print(f"sender {args.name} registered with events {events}", flush=True)
        try:
            while not args.count or count < args.count:
                count += 1
                for event in events:
                    sender.trigger(event, count)
                    print(f"triggered {args.name}:{event} {count}", flush=True)
                time.sleep(args.interval)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
