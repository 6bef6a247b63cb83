"""Sender metadata: the ``meta`` map of REGISTER_SENDER, checked and kept (sans-I/O).

A sender may describe itself when it registers (PROTOCOL.md section 4,
"Sender metadata"): one CBOR map with text keys. The gateway knows three
keys and ignores any other (so a newer peer can say more):

* ``"retained"``: ``true`` (every declared event) or an array of declared
  event names: the gateway keeps their last values (:mod:`sig.core.retained`);
* ``"describe"``: a map event name -> a map of text keys to text or numbers
  (``"unit"``, ``"device_class"``...), for bridges (Home Assistant discovery);
* ``"reliable"``: an array of event names the device sends sequenced, for
  information only.

:func:`parse_meta` turns the bytes into a :class:`SenderMeta` or raises
:class:`MetaError` with a text that says what is wrong (the gateway answers
``ERROR(MALFORMED, ref=sender_ref)`` with it). :func:`encode_meta` is the
clients' side: the arguments of ``add_sender`` as those bytes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from sig.errors import DecodeError, EncodeError, ErrorCode, RemoteProtocolError, UnknownEventError
from sig.protocol.data import pack, unpack

#: What a ``describe`` entry maps a key to.
DescribeValue = str | int | float
Describe = Mapping[str, Mapping[str, DescribeValue]]
_EMPTY: Mapping[str, Mapping[str, DescribeValue]] = MappingProxyType({})


class MetaError(RemoteProtocolError):
    """A REGISTER_SENDER ``meta`` the gateway cannot take (answered as MALFORMED)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ErrorCode.MALFORMED)


@dataclass(frozen=True)
class SenderMeta:
    """What a sender said about itself when it registered (``SenderInfo.meta``)."""

    #: The declared events whose last values the gateway keeps.
    retained: frozenset[str] = frozenset()
    #: Event name -> descriptive keys (unit, device_class, name...), for bridges.
    describe: Describe = field(default_factory=lambda: _EMPTY)
    #: Events the device sends sequenced (information only).
    reliable: tuple[str, ...] = ()


#: A sender that said nothing.
NO_META = SenderMeta()


def parse_meta(raw: bytes, events: Collection[str]) -> SenderMeta:
    """The meta of a sender declaring ``events``; ``b""`` is :data:`NO_META`.

    Raises :class:`MetaError`: not one CBOR map, a key that is not text, a
    ``retained`` that is neither ``true`` nor an array of declared event
    names, a ``describe`` that is not a map of declared events to maps of
    text keys to text or numbers, a ``reliable`` that is not an array of
    declared event names. Unknown keys are ignored.
    """
    if not raw:
        return NO_META
    try:
        doc = unpack(raw)
    except (DecodeError, RecursionError) as exc:
        raise MetaError(f"sender meta is not one CBOR item: {exc}") from None
    if not isinstance(doc, dict):
        raise MetaError(f"sender meta must be a CBOR map, not {type(doc).__name__}")
    if any(type(k) is not str for k in doc):
        raise MetaError("sender meta keys must be text")
    return SenderMeta(
        retained=_retained(doc.get("retained", False), events),
        describe=_describe(doc.get("describe"), events),
        reliable=tuple(_names("reliable", doc.get("reliable", []), events)),
    )


def _retained(value: Any, events: Collection[str]) -> frozenset[str]:
    if value is True:
        return frozenset(events)
    if value is False:
        return frozenset()
    return frozenset(_names("retained", value, events))


def _names(key: str, value: Any, events: Collection[str]) -> list[str]:
    """An array of declared event names, or MetaError."""
    if not isinstance(value, list):
        raise MetaError(f"sender meta {key!r} must be an array of event names")
    for name in value:
        if type(name) is not str or name not in events:
            raise MetaError(f"sender meta {key!r} names {name!r}, which is not a declared event")
    return value


def _describe(value: Any, events: Collection[str]) -> Describe:
    if value is None:
        return _EMPTY
    if not isinstance(value, dict):
        raise MetaError("sender meta 'describe' must be a map of event names to maps")
    out: dict[str, Mapping[str, DescribeValue]] = {}
    for event, keys in value.items():
        if type(event) is not str or event not in events:
            raise MetaError(
                f"sender meta 'describe' names {event!r}, which is not a declared event"
            )
        if not isinstance(keys, dict) or not all(
            type(k) is str and type(v) in (str, int, float) for k, v in keys.items()
        ):
            raise MetaError(
                f"sender meta 'describe' of {event!r} must map text keys to text or numbers"
            )
        out[event] = MappingProxyType(dict(keys))
    return MappingProxyType(out)


def encode_meta(
    events: Collection[str],
    retained: bool | Iterable[str] = False,
    describe: Describe | None = None,
) -> bytes:
    """The ``meta`` bytes of ``add_sender(..., retained=, describe=)``; b"" for nothing.

    Raises UnknownEventError for a retained or described event that is not
    declared, EncodeError for a ``describe`` value that is not text or a number,
    so a client learns it before a round trip.
    """
    doc: dict[str, Any] = {}
    if retained is True:
        doc["retained"] = True
    elif retained is not False:
        if isinstance(retained, str):
            raise TypeError("retained must be True, False or a list of event names, not one str")
        names = list(dict.fromkeys(retained))
        _check_declared("retained", names, events)
        if names:
            doc["retained"] = names
    if describe:
        _check_declared("described", list(describe), events)
        for event, keys in describe.items():
            if not all(type(k) is str and type(v) in (str, int, float) for k, v in keys.items()):
                raise EncodeError(f"describe[{event!r}] must map str keys to str, int or float")
        doc["describe"] = {e: dict(k) for e, k in describe.items()}
    return pack(doc) if doc else b""


def local_meta(
    events: Collection[str],
    retained: bool | Iterable[str] = False,
    describe: Describe | None = None,
) -> SenderMeta:
    """The meta of an in-process sender, checked as a remote one's is."""
    if retained is False and not describe:
        return NO_META
    return parse_meta(encode_meta(events, retained, describe), events)


def _check_declared(what: str, names: list[str], events: Collection[str]) -> None:
    for name in names:
        if name not in events:
            raise UnknownEventError(f"{what} event {name!r} is not declared")
