"""Test doubles for the sans-I/O core: a fake clock, an in-memory link, a scan-counting dict."""

from __future__ import annotations

from typing import Any

from sig.protocol import messages as w


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MemoryLink:
    """Collects what the gateway sends, decoded back into messages."""

    def __init__(self, name: str, persistent: bool = False) -> None:
        self.name = name
        self.persistent = persistent
        self.sent: list[w.Message] = []
        self.closed = False
        self.refuse_events = False

    def send(self, body: bytes, *, droppable: bool = False, urgent: bool = False) -> bool:
        if droppable and self.refuse_events:
            return False
        self.sent.append(w.decode(body))
        return True

    def close(self) -> None:
        self.closed = True

    def stats(self) -> dict[str, Any]:
        return {}

    def take(self) -> list[w.Message]:
        out, self.sent = self.sent, []
        return out


class CountingDict(dict[Any, Any]):
    """A dict that counts full scans (iteration, keys, items, values, clear)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.scans = 0

    def __iter__(self) -> Any:
        self.scans += 1
        return super().__iter__()

    def keys(self) -> Any:
        self.scans += 1
        return super().keys()

    def items(self) -> Any:
        self.scans += 1
        return super().items()

    def values(self) -> Any:
        self.scans += 1
        return super().values()
