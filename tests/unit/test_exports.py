"""Pin the public surface so that a change to it is a deliberate one."""

from __future__ import annotations

import sig


def test_public_names_exist_and_are_listed() -> None:
    for name in sig.__all__:
        assert hasattr(sig, name), name
    for name in (
        "LocalRouter",
        "Sender",
        "Signal",
        "Listener",
        "SigError",
        "RequestError",
        "setup_logger",
        "SimpleLogger",
        "LOG_LEVELS",
        "discover",
        "discover_async",
        "DiscoveredGateway",
    ):
        assert name in sig.__all__


def test_request_errors_map_to_wire_codes() -> None:
    from sig.errors import ErrorCode, request_error_for

    for cls in (
        sig.NoSuchSender,
        sig.NoSuchMethod,
        sig.HandlerError,
        sig.RequestTimeout,
        sig.SenderGone,
        sig.NotAuthorised,
    ):
        err = request_error_for(cls.code, "msg")
        assert type(err) is cls and str(err) == "msg"
    assert type(request_error_for(999, "odd")) is sig.RequestError
    assert ErrorCode.SENDER_GONE == 13
