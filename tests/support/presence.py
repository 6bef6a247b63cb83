"""``#connect`` / ``#disconnect`` data without its incarnation, for comparing with a literal.

The incarnation (PROTOCOL.md section 4) is random per gateway start, so a test
that compares announcements with a literal drops it with :func:`plain`; the
tests of incarnations check it on their own.
"""

from __future__ import annotations

from typing import Any


def plain(value: Any) -> Any:
    """``value`` with every ``"incarnation"`` key of every dict in it removed (any nesting)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if k != "incarnation"}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    return value
