"""The seed's (pysig 0.7.3) names keep working on the same objects."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

import sig


def test_seed_names_on_local_router() -> None:
    router = sig.LocalRouter()
    got: list[tuple[dict[str, Any], Any]] = []
    router.addListener(lambda info, data: got.append((info, data)), "mysender", "event")
    sender = router.addSender(
        "mysender", ["event", "#channel_event"], requests={"get": lambda p: 7}
    )
    assert router.getSender("mysender") is sender
    assert sender.getName() == "mysender"
    assert sender.getEvents() == ["event", "#channel_event"]
    sender.getSignal("event").trigger({"x": 1})
    assert got == [({"sender": "mysender", "event": "event"}, {"x": 1})]
    assert router.request("mysender", "get", None) == 7
    handle = router.addListener(lambda info, data: None, "a", "b")
    assert router.removeListener(handle)
    assert router.removeSender("mysender")


def test_article_nested_event_list_is_accepted() -> None:
    # The article writes addRemoteSender(name, [sender_events]) with sender_events a list.
    router = sig.LocalRouter()
    sender = router.addSender("mysender", [["tick", "tac"]])
    assert sender.events == ("tick", "tac")


@pytest.fixture
def restored_loggers() -> Iterator[None]:
    """Put the "sig" and "sig.app" loggers back as they were.

    setup_logger gives "sig" the handlers of a SimpleLogger writing to this
    test's captured stderr; left in place, every later test's gateway thread
    would log into that closed stream ("--- Logging error ---").
    """
    saved = [
        (log, list(log.handlers), log.level, log.propagate)
        for log in (logging.getLogger("sig"), logging.getLogger("sig.app"))
    ]
    try:
        yield
    finally:
        for log, handlers, level, propagate in saved:
            log.handlers = handlers
            log.setLevel(level)
            log.propagate = propagate


@pytest.mark.usefixtures("restored_loggers")
def test_simple_logger_and_setup_logger_use_standard_logging(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = sig.SimpleLogger(level=sig.LOG_LEVELS.LEVEL_INFO)
    assert isinstance(log, logging.Logger)
    root = sig.setup_logger(log)
    assert root is logging.getLogger("sig") and root.level == logging.INFO
    logging.getLogger("sig.core.routing").info("routed %s", "x")
    log.info("hello from the app")
    log.debug("not shown")
    err = capsys.readouterr().err
    assert "routed x" in err and "hello from the app" in err and "not shown" not in err
    assert err.count("hello from the app") == 1
    assert sig.LOG_LEVELS.LEVEL_DEBUG == logging.DEBUG
