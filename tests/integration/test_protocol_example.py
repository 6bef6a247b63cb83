"""The worked example of :mod:`sig.protocol` runs, as written, against a real gateway.

The module docstring is what a third party copies to speak to a gateway with
the codec alone; running it here over a real TCP connection to a
:class:`ServerRouter` keeps it true.
"""

from __future__ import annotations

import asyncio
import doctest
import io
from typing import Any

from procs import until

import sig.protocol
from sig.routers.gateway import ServerRouter


def _run_examples(port: int) -> tuple[doctest.TestResults, str]:
    """Run the module docstring's examples with ``port`` bound; (results, failure report)."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = [t for t in finder.find(sig.protocol, globs={"port": port}) if t.name == "sig.protocol"]
    assert len(tests) == 1, [t.name for t in tests]
    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(tests[0], out=report.write)
    return runner.summarize(verbose=False), report.getvalue()


async def test_the_worked_example_talks_to_a_real_gateway() -> None:
    got: list[tuple[str, str, Any]] = []
    async with ServerRouter("127.0.0.1", 0) as router:
        router.add_listener(
            lambda info, data: got.append((info["sender"], info["event"], data)),
            "thermo",
            "temperature",
        )
        results, report = await asyncio.to_thread(_run_examples, router.port)
        assert results.failed == 0, report
        assert results.attempted >= 20  # the whole example ran, not an empty docstring
        # The example's trigger was routed like any other: a local listener got it too.
        await until(lambda: got, what="the example's event at a local listener")
        assert got == [("thermo", "temperature", 21.5)]
