"""The owned sender names on disk: a small JSON file, written atomically.

``{"version": 1, "claims": {"pump": "device:pumps", "sensor-1": "user:sensor1"}}``

The gateway core keeps the claims (sig.core.claims) and calls :func:`saver`'s
function after each change; this module is the I/O. A write goes to a
temporary file in the same directory, is flushed to disk, then renamed over
the old one: a crash or a kill -9 leaves the old file or the new one, never
half of either. A file that cannot be read or parsed at start-up stops the
gateway (silently starting with no claims would hand owned names to anyone).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from sig.core.claims import Claims
from sig.errors import SigError
from sig.routers.files import write_atomically

logger = logging.getLogger(__name__)

#: The state file's name when the config names none: next to the users file or the config.
DEFAULT_STATE_NAME = "sig-state.json"
#: Bytes a state file may have (256 claims of 255-byte names for ~1,000 principals).
MAX_STATE_BYTES = 64 << 20
VERSION = 1


class StateFileError(SigError):
    """The claims state file exists but cannot be read, or is not what it should be."""


def load(path: Path) -> dict[str, str]:
    """The claims in ``path`` (an empty dict if it does not exist yet)."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise StateFileError(f"cannot read the state file {path}: {exc.strerror}") from exc
    if len(raw) > MAX_STATE_BYTES:
        raise StateFileError(f"state file {path} is larger than {MAX_STATE_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise StateFileError(f"state file {path} is not valid JSON: {exc}") from exc
    claims = doc.get("claims") if isinstance(doc, dict) else None
    if not isinstance(claims, dict) or doc.get("version") != VERSION:
        raise StateFileError(f'state file {path}: expected {{"version": 1, "claims": {{...}}}}')
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in claims.items()):
        raise StateFileError(f"state file {path}: claims must map names to owners")
    return claims


def save(path: Path, claims: Mapping[str, str]) -> None:
    """Write ``claims`` to ``path`` atomically (:func:`sig.routers.files.write_atomically`)."""
    doc = {"version": VERSION, "claims": dict(claims)}
    write_atomically(path, json.dumps(doc, indent=1, sort_keys=True))


def saver(path: Path) -> Callable[[Mapping[str, str]], None]:
    """The ``save`` callback of :class:`sig.core.claims.Claims` for ``path``."""
    return lambda claims: save(path, claims)


def open_claims(path: Path) -> Claims:
    """The claims of ``path``, saved back to it on every change."""
    held = load(path)
    logger.info("sender name claims: %d in %s", len(held), path)
    return Claims(held, save=saver(path))
