"""A gateway with serial ports on socat ptys, emulated devices and TCP clients.

Shared by the serial tests; everything it starts is torn down in reverse by
:meth:`SerialRig.close` (the ``rig`` fixtures call it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sig.routers.client import AsyncClientRouter
from sig.routers.gateway import ServerRouter
from sig.routers.serial import open_serial_links
from sig.tools.device_sim import DeviceSim

#: Seconds any one serial condition may take (a loaded CI machine).
DEADLINE = 10.0


class SerialRig:
    """A gateway, its serial ports, devices and TCP clients; torn down in reverse."""

    def __init__(self) -> None:
        self.router: ServerRouter | None = None
        self.devices: list[DeviceSim] = []
        self.clients: list[AsyncClientRouter] = []

    async def gateway(self, *ports: Path | str, **router_options: Any) -> ServerRouter:
        router = ServerRouter("127.0.0.1", 0, **router_options)
        await router.start()
        self.router = router
        self.ports = await open_serial_links(router, [str(p) for p in ports])
        return router

    async def device(self, port: Path, **kw: Any) -> DeviceSim:
        sim = DeviceSim(str(port), **kw)
        self.devices.append(sim)
        await sim.start()
        return sim

    async def client(self, name: str, **kw: Any) -> AsyncClientRouter:
        assert self.router is not None
        client = AsyncClientRouter("127.0.0.1", self.router.port, name=name, **kw)
        await client.connect()
        self.clients.append(client)
        return client

    def link(self, port: Path) -> dict[str, Any]:
        """The `$gateway links` row of the serial port ``port``."""
        assert self.router is not None
        rows = [r for r in self.router.links() if r["link"] == f"serial:{port}"]
        assert len(rows) == 1, rows
        return rows[0]

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        for sim in self.devices:
            await sim.stop()
        if self.router is not None:
            await self.router.stop()
