"""What the ACLs cost the gateway core's hot paths, against the same core without them.

The sans-I/O core, links that take every frame: one sender's channel event
fanned out to ``--links`` listening links (``GatewayCore.route``), and one
request to an in-process handler (``GatewayCore.start_request``), each timed
best of 5 over ``--count`` calls:

* ``no [acl]``: everything allowed; ``route`` calls the routing table's match
  directly (the cost before ACLs existed);
* ``[acl], 1 principal``: every listener restricted, all the same user;
* ``[acl], N principals``: one user per link (one cached decision each).

The end-to-end figure (real processes, TCP) is ``bench/router.py --acl
bench/acl-restrictive.toml`` against the same command without ``--acl``.

Run: ``python bench/acl.py [--links 4] [--count 200000]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from _common import ROOT, header, table

sys.path.insert(0, str(ROOT))

from sig.core.acl import Policy
from sig.core.gateway import GatewayCore
from sig.core.principals import Principal
from sig.protocol import messages as w
from sig.protocol.data import pack


class NullLink:
    """A link that accepts every frame and keeps none."""

    persistent = False
    dropped = 0

    def __init__(self, name: str) -> None:
        self.name = name

    def send(self, body: bytes, *, droppable: bool = False, urgent: bool = False) -> bool:
        return True

    def close(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {}


def build(links: int, principals: int | None) -> GatewayCore:
    """A core with ``links`` listeners of ``(None, "#e")`` and one sender ``s1``."""
    core = GatewayCore("bench")
    if principals is not None:
        users = {
            f"u{i}": {"own": ["s*"], "listen": [["s*", "#e"]], "request": ["svc"]}
            for i in range(links)
        }
        core.access.install(Policy.from_table({"users": users}))
    for i in range(links):
        s = core.attach(NullLink(f"l{i}"))
        core.receive(s, w.encode(w.Hello(f"p{i}", 65535, 0)))
        if principals is not None:
            s.principal = Principal(f"u{i % principals}", "user")
        core.receive(s, w.encode(w.Listen(1, None, "#e")))
    sender = core.attach(NullLink("sender"))
    core.receive(sender, w.encode(w.Hello("sender", 65535, 0)))
    if principals is not None:
        sender.principal = Principal("u0", "user")
    core.receive(sender, w.encode(w.RegisterSender(1, "s1", [(1, "#e")], [])))
    core.endpoints.add_sender("svc", [], {"echo": lambda params: params})
    return core


def best_us(fn: Any, count: int) -> float:
    """The best of 5 timings of ``count`` calls, in microseconds per call."""
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(count):
            fn()
        best = min(best, time.perf_counter() - t)
    return best / count * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--links", type=int, default=4)
    ap.add_argument("--count", type=int, default=200_000)
    args = ap.parse_args(argv)
    header(
        "ACL cost in the gateway core",
        [f"{args.links} links listening to (None, '#e'); best of 5 x {args.count:,} calls"],
    )
    data = pack(bytes(16))
    rows = []
    base_route = base_request = 0.0
    for label, principals in (
        ("no [acl]", None),
        ("[acl], 1 principal", 1),
        (f"[acl], {args.links} principals", args.links),
    ):
        core = build(args.links, principals)
        requester = next(s for s in core.sessions if s.link.name == "sender")

        def route(core: GatewayCore = core) -> None:
            core.route("s1", "#e", data)

        def request(core: GatewayCore = core, requester: Any = requester) -> None:
            core.start_request("svc", "echo", data, _done, requester=requester)

        r, q = best_us(route, args.count), best_us(request, args.count // 4)
        base_route, base_request = base_route or r, base_request or q
        assert core.counters["events_out"] == 5 * args.count * args.links
        rows.append(
            [label, f"{r:.3f}", f"{r / base_route:.2f}", f"{q:.3f}", f"{q / base_request:.2f}"]
        )
    print(table(["policy", "route us", "x no-acl", "request us", "x no-acl"], rows))
    return 0


def _done(status: int, message: str, data: bytes) -> None:
    assert status == 0, message


if __name__ == "__main__":
    sys.exit(main())
