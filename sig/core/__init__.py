"""The sans-I/O core: routing, sessions, the gateway and client cores, endpoints.

Nothing here imports asyncio: time comes in through an injected clock and
bytes go out through the :class:`sig.core.session.Link` interface.
"""
