"""The bridge's MQTT topic scheme and the escaping of sig names in it (pure, no I/O).

A sig name (1..255 UTF-8 bytes, no control characters) may hold every
character MQTT reserves in a topic: the level separator ``/``, the wildcards
``+`` and ``#``, NUL, and a leading ``$`` (the broker's own topics). One topic
level carries one name, percent-encoded (BRIDGE.md, "Topics"):

* ``%``, ``/``, ``+``, ``#`` and NUL anywhere, as ``%25 %2F %2B %23 %00``;
* a leading ``$`` (``%24``) and a leading ``@`` (``%40``): a level that starts
  with a literal ``@`` is the bridge's own (``@gw``, ``@presence``, ``@req``),
  so it never collides with a name.

:func:`unescape` is the exact inverse on what :func:`escape` makes and refuses
anything else (a raw reserved character, a bad or needless ``%XX``), so one name
has one topic level and one topic level at most one name.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Characters escaped wherever they stand in a name.
_ALWAYS = {"%": "%25", "/": "%2F", "+": "%2B", "#": "%23", "\0": "%00"}
#: Characters escaped only at the start of a name.
_LEADING = {"$": "%24", "@": "%40"}
_DECODE = {v: k for k, v in (*_ALWAYS.items(), *_LEADING.items())}

#: Default first level of every topic the bridge uses.
DEFAULT_PREFIX = "sig"
#: A topic level that names a sender's request method: ``<prefix>/<sender>/@req/<method>``.
REQUEST_LEVEL = "@req"


def escape(name: str) -> str:
    """One topic level for the sig name ``name`` (see the module docstring)."""
    out = []
    for i, ch in enumerate(name):
        if ch in _ALWAYS:
            out.append(_ALWAYS[ch])
        elif i == 0 and ch in _LEADING:
            out.append(_LEADING[ch])
        else:
            out.append(ch)
    return "".join(out)


def unescape(level: str) -> str | None:
    """The sig name that :func:`escape` turned into ``level``, or None if it made no such level."""
    if not level:
        return None
    out = []
    i = 0
    while i < len(level):
        ch = level[i]
        if ch == "%":
            code = level[i : i + 3]
            ch = _DECODE.get(code, "")
            if not ch or (ch in _LEADING and i != 0):
                return None  # not a code escape() writes there
            i += 3
        elif ch in _ALWAYS or (i == 0 and ch in _LEADING):
            return None  # escape() never leaves these raw
        else:
            i += 1
        out.append(ch)
    return "".join(out)


@dataclass(frozen=True)
class Topics:
    """Every topic of one bridge: events, presence, status, listens, requests.

    ``prefix`` is the first level (``sig`` by default); it may itself have
    several levels (``home/sig``) but no wildcard.
    """

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix or any(c in self.prefix for c in "+#\0") or self.prefix.startswith("$"):
            raise ValueError(f"MQTT topic prefix {self.prefix!r}: no +, #, NUL or leading $")
        if self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise ValueError(f"MQTT topic prefix {self.prefix!r} must not start or end with /")

    # --- what a gateway publishes ------------------------------------------

    def event(self, sender: str, event: str) -> str:
        """``<prefix>/<sender>/<event>``: one event's topic."""
        return f"{self.prefix}/{escape(sender)}/{escape(event)}"

    def status(self, gateway: str) -> str:
        """``<prefix>/@gw/<gateway>/status``: retained online/offline (the last will)."""
        return f"{self.prefix}/@gw/{escape(gateway)}/status"

    def listens(self, gateway: str) -> str:
        """``<prefix>/@gw/<gateway>/listens``: retained list of what its listeners want."""
        return f"{self.prefix}/@gw/{escape(gateway)}/listens"

    def responses(self, gateway: str) -> str:
        """``<prefix>/@gw/<gateway>/resp``: where answers to its requests go."""
        return f"{self.prefix}/@gw/{escape(gateway)}/resp"

    def presence(self, gateway: str, sender: str) -> str:
        """``<prefix>/@presence/<gateway>/<sender>``: retained claim of one sender name."""
        return f"{self.prefix}/@presence/{escape(gateway)}/{escape(sender)}"

    def request(self, sender: str, method: str) -> str:
        """``<prefix>/<sender>/@req/<method>``: a request to a sender."""
        return f"{self.prefix}/{escape(sender)}/{REQUEST_LEVEL}/{escape(method)}"

    # --- what a gateway subscribes to ----------------------------------------

    def listen_filter(self, sender: str | None, event: str | None) -> str:
        """The topic filter of one sig listen key (None: any, ``+``)."""
        s = "+" if sender is None else escape(sender)
        e = "+" if event is None else escape(event)
        return f"{self.prefix}/{s}/{e}"

    @property
    def all_status(self) -> str:
        return f"{self.prefix}/@gw/+/status"

    @property
    def all_listens(self) -> str:
        return f"{self.prefix}/@gw/+/listens"

    @property
    def all_presence(self) -> str:
        return f"{self.prefix}/@presence/+/+"

    @property
    def all_requests(self) -> str:
        return f"{self.prefix}/+/{REQUEST_LEVEL}/+"

    # --- reading a topic back ----------------------------------------------

    def parse(self, topic: str) -> tuple[str, ...] | None:
        """What a topic of this scheme says, or None if it is none of them.

        ``("event", sender, event)``, ``("request", sender, method)``,
        ``("status" | "listens" | "resp", gateway)``, ``("presence", gateway, sender)``.
        """
        head = self.prefix + "/"
        if not topic.startswith(head):
            return None
        levels = topic[len(head) :].split("/")
        if len(levels) == 2:
            return _names("event", levels)
        if len(levels) == 3 and levels[1] == REQUEST_LEVEL:
            return _names("request", (levels[0], levels[2]))
        if len(levels) == 3 and levels[0] == "@gw" and levels[2] in ("status", "listens", "resp"):
            return _names(levels[2], levels[1:2])
        if len(levels) == 3 and levels[0] == "@presence":
            return _names("presence", levels[1:])
        return None


def _names(kind: str, levels: list[str] | tuple[str, ...]) -> tuple[str, ...] | None:
    names = [unescape(level) for level in levels]
    if any(n is None for n in names):
        return None
    return (kind, *(n for n in names if n is not None))
