"""The public module :mod:`sig.protocol`: its names are pinned, and each constant has one home.

The worked example in its docstring runs against a real gateway in
tests/integration/test_protocol_example.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import sig.protocol
from sig import errors
from sig.protocol import constants, data, frame, messages, reliable, signing

ROOT = Path(__file__).parents[2]

PUBLIC = {
    # frames
    "encode_frame",
    "FrameDecoder",
    "FrameStats",
    # messages
    "MessageType",
    "Feature",
    "Message",
    "Hello",
    "Welcome",
    "Ping",
    "Pong",
    "Invite",
    "Error",
    "Ack",
    "RegisterSender",
    "SenderRegistered",
    "UnregisterSender",
    "Listen",
    "Listening",
    "Unlisten",
    "Trigger",
    "Event",
    "Request",
    "Response",
    "Retained",
    "encode",
    "decode",
    # fast paths
    "trigger_prefix",
    "event_head",
    "split_event",
    "split_trigger",
    # data
    "pack",
    "unpack",
    # signed frames (PROTOCOL.md section 5)
    "Signer",
    "parse_key",
    "SignatureError",
    # reliable UART mode (PROTOCOL.md section 5)
    "add_seq",
    "strip_seq",
    # errors and codes
    "ErrorCode",
    "LocalProtocolError",
    "RemoteProtocolError",
    "EncodeError",
    "DecodeError",
    # constants
    "PROTOCOL_VERSION",
    "MAX_NAME",
    "MAX_BODY_LIMIT",
    "DEFAULT_MAX_BODY",
    "DEFAULT_PORT",
    "GATEWAY_SENDER",
}


def test_all_is_pinned() -> None:
    """A name added to or dropped from the supported API is a deliberate change here too."""
    assert sorted(sig.protocol.__all__) == sorted(PUBLIC)
    assert len(sig.protocol.__all__) == len(PUBLIC)  # no name listed twice


def test_every_public_name_is_the_codec_s_own_object() -> None:
    """sig.protocol re-exports; it defines nothing a submodule could disagree with."""
    for name in PUBLIC:
        obj = getattr(sig.protocol, name)
        homes = (messages, frame, data, constants, errors, signing, reliable)
        assert any(getattr(m, name, None) is obj for m in homes), name


def test_every_message_type_has_a_class_that_knows_it() -> None:
    classes = [
        getattr(sig.protocol, n) for n in PUBLIC if hasattr(getattr(sig.protocol, n), "TYPE")
    ]
    assert sorted(c.TYPE for c in classes) == sorted(sig.protocol.MessageType)


def test_frame_api_keeps_its_names_and_behaviour() -> None:
    body = sig.protocol.encode(sig.protocol.Ping(7))
    wire = sig.protocol.encode_frame(body)
    decoder = sig.protocol.FrameDecoder(max_body=16)
    assert decoder.feed(wire[:2]) == [] and decoder.feed(wire[2:]) == [body]
    assert decoder.stats.frames == 1 and decoder.stats.errors == 0
    assert sig.protocol.decode(body) == sig.protocol.Ping(7)


def _nodes() -> list[tuple[str, ast.AST]]:
    """(file:line, node) of every AST node in sig/ and carriers/, except in constants.py."""
    home = ROOT / "sig" / "protocol" / "constants.py"
    paths = sorted([*(ROOT / "sig").rglob("*.py"), *(ROOT / "carriers").rglob("*.py")])
    return [
        (f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}", node)
        for path in paths
        if path != home
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
    ]


def test_each_constant_is_defined_once() -> None:
    """MAX_NAME, "$gateway" and the port had two to six homes; sig.protocol.constants is the one."""
    names = {"PROTOCOL_VERSION", "MAX_NAME", "GATEWAY_SENDER", "DEFAULT_PORT"}
    names |= {"MAX_BODY_LIMIT", "DEFAULT_MAX_BODY", "MAX_VARINT", "TYPE_MASK"}
    literals = {constants.GATEWAY_SENDER, constants.DEFAULT_PORT}
    found = [
        where
        for where, node in _nodes()
        if (
            isinstance(node, ast.Assign)
            and any(getattr(t, "id", None) in names for t in node.targets)
        )
        or (
            isinstance(node, ast.Constant)
            and not isinstance(node.value, bool)
            and node.value in literals
        )
    ]
    assert found == []
