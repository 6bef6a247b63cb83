"""The routers users run: the gateway process, the async and sync clients, the local router.

They bind the sans-I/O core (:mod:`sig.core`) to asyncio and the carriers.
"""
