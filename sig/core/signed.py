"""Signed sessions on a keyed serial port (PROTOCOL.md section 5), gateway side, sans-I/O.

A serial port configured with a key gets its frames through a
:class:`SignedLink`: it sits between the carrier and the core, so the core
never sees a signed body and a TCP link never pays a single check for signing
(it has no SignedLink). Received bodies go through :meth:`SignedLink.receive`,
which verifies and strips them (or drops and counts them); what the core
sends goes through :meth:`SignedLink.send`, which signs it once the device has
opened a signed session, and plain before (the INVITE a port sends when it
opens, the NOT_AUTHORISED that refuses an unsigned HELLO).

Two adjustments make the core's answers right without the core knowing:

* a HELLO reaches the core announcing ``max_body - 12`` (the device's limit
  counts the signed body, counter and tag included), so every body the core
  sends still fits the device once signed;
* the WELCOME the core answers gets the AUTH feature bit before it is signed.

One :class:`SignedPort` per configured port keeps the signer and the counters
``auth_failed``, ``replayed`` and ``unsigned`` for as long as the gateway runs
(reopens included); each opening of the port gets its own SignedLink.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

from sig.errors import ErrorCode, RemoteProtocolError, SignatureError
from sig.protocol import messages as w
from sig.protocol.signing import OVERHEAD, Signer

logger = logging.getLogger(__name__)

__all__ = ["SignedLink", "SignedPort"]


class SignedPort:
    """The key, signer and drop counters of one keyed serial port."""

    def __init__(
        self, key: bytes, name: str = "", random: Callable[[int], bytes] = os.urandom
    ) -> None:
        self.name = name
        self.signer = Signer(key, "gateway", random)
        #: Frames dropped: bad tag (or no session to check against), old counter, no AUTH flag.
        self.counts = {"auth_failed": 0, "replayed": 0, "unsigned": 0}
        self._logged: set[str] = set()

    def stats(self) -> dict[str, Any]:
        """What a ``$gateway links`` row of this port adds."""
        return {"signed": True, "signed_session": self.signer.established, **self.counts}

    def drop(self, exc: SignatureError) -> None:
        """Count a dropped frame; log the first of each reason."""
        self.counts[exc.reason] += 1
        if exc.reason not in self._logged:
            self._logged.add(exc.reason)
            logger.warning("%s: dropping frame (%s): %s", self.name, exc.reason, exc)


class SignedLink:
    """A carrier link as the core sees it on a keyed port: signs and verifies.

    Everything but :meth:`send`, :meth:`receive` and :meth:`stats` is the
    wrapped link's (read and written through).
    """

    _own = frozenset({"_link", "port"})
    _link: Any
    port: SignedPort

    def __init__(self, link: Any, port: SignedPort) -> None:
        object.__setattr__(self, "_link", link)
        object.__setattr__(self, "port", port)
        port.signer.reset()  # a new opening of the port: the device must HELLO again

    def __getattr__(self, name: str) -> Any:
        return getattr(self._link, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._own:
            object.__setattr__(self, name, value)
        else:
            setattr(self._link, name, value)

    def send(self, body: bytes, *, droppable: bool = False, urgent: bool = False) -> bool:
        """Sign ``body`` when a signed session is open (or it is its WELCOME); else plain."""
        signer = self.port.signer
        if body[0] == w.MessageType.WELCOME:
            body = _with_auth(body)
        if signer.established or (body[0] == w.MessageType.WELCOME and signer.device_nonce):
            try:
                body = signer.seal(body)
            except SignatureError:  # counter used up: the device must open a new session
                body = w.encode(w.Invite())
        link: Any = self._link
        return bool(link.send(body, droppable=droppable, urgent=urgent))

    def receive(self, body: bytes) -> bytes | None:
        """The plain body for the core, or None: dropped and counted (never routed)."""
        port = self.port
        try:
            plain = port.signer.unseal(body)
        except SignatureError as exc:
            port.drop(exc)
            self._refuse(body, exc)
            return None
        if plain[0] == w.MessageType.HELLO:
            return _announce_less(plain)
        return plain

    def _refuse(self, body: bytes, exc: SignatureError) -> None:
        """Answer a refused HELLO (NOT_AUTHORISED) or a frame of a session the gateway
        does not know (INVITE: a gateway restart heals at once), in plain."""
        kind = body[0] & w.TYPE_MASK
        link: Any = self._link
        if kind == w.MessageType.HELLO and exc.reason != "replayed":
            why = (
                "this port requires signed frames (feature 0x02)"
                if exc.reason == "unsigned"
                else "signature refused"
            )
            link.send(w.encode(w.Error(ErrorCode.NOT_AUTHORISED, 0, why, kind)), urgent=True)
        elif exc.reason == "auth_failed" and not self.port.signer.established:
            link.send(w.encode(w.Invite()))

    def stats(self) -> dict[str, Any]:
        link: Any = self._link
        return {**link.stats(), **self.port.stats()}


def _with_auth(body: bytes) -> bytes:
    """The core's WELCOME with the AUTH feature bit agreed."""
    msg = w.decode(body)
    assert isinstance(msg, w.Welcome)
    return w.encode(dataclasses.replace(msg, features=msg.features | w.Feature.AUTH))


def _announce_less(body: bytes) -> bytes:
    """A verified HELLO as the core gets it: ``max_body`` less the signing overhead."""
    try:
        msg = w.decode(body)
    except RemoteProtocolError:
        return body  # the core answers it as it answers any malformed HELLO
    assert isinstance(msg, w.Hello)
    return w.encode(dataclasses.replace(msg, max_body=max(8, msg.max_body - OVERHEAD)))
