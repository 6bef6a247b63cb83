# ruff: noqa: UP031, F841, F403, F405
"""The client of the article "How to Interconnect python Applications with pysig".

The article's code, unchanged apart from Python 2 -> 3 syntax and two typos
(``-_name__`` and a format string with two ``%s`` and one value). Added only
to make it testable: ``--host``/``--port`` (the article used localhost:3000),
``--interval`` (the article sleeps 5 s) and ``--cycles N`` (stop after N
tick/tac rounds instead of running until Ctrl-C).

Run ``sig serve`` (or examples/generic_server.py), then this file; it listens
to ``timer:tick`` and sends ``mysender:tick`` and ``mysender:tac``.
"""

import argparse

import sig
from sig.carrier.tcpclient import *


def listen_to_tick(info, data):
    sender = info.get("sender")
    event = info.get("event")

    logger.info("[%s] Event %s received with data %s" % (sender, event, data))


def register_on_connect():
    global senderobj, signal_tick, signal_tac

    # add listener
    logger.info("Connecting listener to timer->tick")
    client.addListener(listen_to_tick, "timer", "tick")

    # add sender
    sender_name = "mysender"
    sender_events = ["tick", "tac"]

    logger.info("Connecting %s sender" % (sender_name))
    senderobj = client.addRemoteSender(sender_name, [sender_events])

    # get signals
    signal_tick = senderobj.getSignal("tick")
    signal_tac = senderobj.getSignal("tac")


def cleanup_on_disconnect():
    logger.info("Disconnected!")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the pysig article's client")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--cycles", type=int, default=0, help="tick/tac rounds (0: forever)")
    args = parser.parse_args()

    # setup logging
    logger = sig.SimpleLogger(level=sig.LOG_LEVELS.LEVEL_INFO)
    sig.setup_logger(logger)

    # create tcp carrier
    tcpclient = CarrierTCPClient()

    # create client router
    client = sig.ClientRouter(tcpclient)

    tcpclient.on_connected = register_on_connect
    tcpclient.on_disconnected = cleanup_on_disconnect
    tcpclient.connect(args.host, args.port)

    import time

    count_of_ticks = 0
    try:
        while True:
            # ticking
            if tcpclient.isConnected():
                count_of_ticks += 1

                logger.info(
                    "[%s] Triggering event tick with data '%s'" % (count_of_ticks, count_of_ticks)
                )
                signal_tick.trigger(count_of_ticks)

            # waiting for tac
            time.sleep(args.interval)

            # tac
            if tcpclient.isConnected():
                logger.info("[%s] Triggering event tac with no data")
                signal_tac.trigger(None)

            # sleep
            time.sleep(args.interval)

            if args.cycles and count_of_ticks >= args.cycles:
                raise KeyboardInterrupt

    except KeyboardInterrupt as e:
        logger.info("Diconnecting client..")
        tcpclient.disconnect()
