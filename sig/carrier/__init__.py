"""The seed's carrier module (``from sig.carrier.tcpclient import *``), kept for its API.

It sits on top of the routers (its ``CarrierTCPClient`` is handed to a
:class:`sig.ClientRouter`); sig's own byte transports are in ``carriers/``.
"""
