"""Which event loop sig runs on: asyncio's, or uvloop's (the ``fast`` extra).

``pip install 'sig-gateway[fast]'`` installs uvloop; ``[gateway] loop =
"uvloop"`` (or ``sig serve --loop uvloop``) runs the gateway on it, and
``ClientRouter(loop="uvloop")`` the synchronous client's I/O thread (which
has a loop of its own). An :class:`sig.AsyncClientRouter` runs on the
caller's loop: start it with ``uvloop.run(main())`` to have it there too.
``"auto"`` means uvloop when it can be imported, asyncio's loop otherwise;
the default is ``"asyncio"``: a gateway faster than its listeners drops more
for those on the default ``drop`` policy, so the faster loop is chosen, not
implied by an installed package (BENCHMARKS.md, issue 13).
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from sig.errors import SigError

T = TypeVar("T")
#: The choices, as the config file and the flags spell them.
LOOPS = ("auto", "asyncio", "uvloop")


def resolve(choice: str = "asyncio") -> str:
    """``"asyncio"`` or ``"uvloop"``: what ``choice`` means on this install.

    Raises SigError for an unknown choice, or "uvloop" when it is not installed.
    """
    if choice not in LOOPS:
        raise SigError(f"loop must be one of {', '.join(LOOPS)}, not {choice!r}")
    have = importlib.util.find_spec("uvloop") is not None
    if choice == "uvloop" and not have:
        raise SigError("loop = uvloop needs uvloop: pip install 'sig-gateway[fast]'")
    if choice == "auto":
        return "uvloop" if have else "asyncio"
    return choice


def loop_factory(choice: str = "asyncio") -> Callable[[], asyncio.AbstractEventLoop]:
    """A function making a new event loop of the chosen kind."""
    if resolve(choice) == "uvloop":
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return asyncio.new_event_loop


def new_event_loop(choice: str = "asyncio") -> asyncio.AbstractEventLoop:
    """A new event loop of the chosen kind (not set as the thread's current loop)."""
    return loop_factory(choice)()


def run(main: Coroutine[Any, Any, T], choice: str = "asyncio") -> T:
    """``asyncio.run(main)`` on the chosen loop (as ``asyncio.Runner(loop_factory=...)``)."""
    if resolve(choice) == "asyncio":
        return asyncio.run(main)
    import uvloop

    result: T = uvloop.run(main)
    return result
