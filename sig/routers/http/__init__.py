"""The gateway's HTTP side: Prometheus ``/metrics``, ``/healthz`` and a live status page.

``sig serve --http 127.0.0.1:8080`` (or ``[http] listen`` in the config) runs
it in the gateway's event loop; in code::

    async with ServerRouter("127.0.0.1", 3000) as router, HttpSide(router, "127.0.0.1", 8080):
        ...
"""

from sig.routers.http._metrics import GATEWAY_KEYS, LINK_KEYS, GatewayCollector, generic_name
from sig.routers.http._server import HttpBindError, HttpSide, is_loopback, parse_bind

__all__ = [
    "GATEWAY_KEYS",
    "LINK_KEYS",
    "GatewayCollector",
    "HttpBindError",
    "HttpSide",
    "generic_name",
    "is_loopback",
    "parse_bind",
]
