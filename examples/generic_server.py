"""A sig gateway with the demo sender: ``timer`` triggers ``tick`` every interval.

    python examples/generic_server.py --port 3000 --timer-interval 5

It listens on 127.0.0.1 (like ``sig serve``); to open it to the LAN with no
users configured, ``--host 0.0.0.0 --allow-anonymous`` (which it warns about).

The same as ``sig serve``, written against the API: a ServerRouter, one
in-process sender with a ``get_ticks`` request, and a clean stop on Ctrl-C or
SIGTERM (every connected client sees its link close and its listeners get
``#disconnect`` for the timer).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

import sig


async def run(args: argparse.Namespace) -> int:
    router = sig.ServerRouter(args.host, args.port, allow_anonymous=args.allow_anonymous)
    try:
        await router.start()
    except sig.ConnectError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    ticks = 0
    timer = router.add_sender(args.timer_name, [args.timer_event], {"get_ticks": lambda p: ticks})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signo in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signo, stop.set)
    print(f"generic_server listening on {args.host}:{router.port}", flush=True)
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), args.timer_interval)
            break
        ticks += 1
        timer.trigger(args.timer_event, ticks)
    await router.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--allow-anonymous",
        action="store_true",
        help="serve anonymous clients on an address that is not loopback",
    )
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--timer-name", default="timer")
    parser.add_argument("--timer-event", default="tick")
    parser.add_argument("--timer-interval", type=float, default=5.0, help="seconds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
