"""The gateway's logins on asyncio: the users file, and password checks on threads.

The sans-I/O :class:`sig.core.auth.Authenticator` decides; this module does
its I/O. :class:`GatewaySecurity` reads the users file (and again on
:meth:`GatewaySecurity.reload`, which ``sig serve`` calls on SIGHUP) and runs
each :class:`sig.core.auth.Verification` with ``loop.run_in_executor`` on a
small thread pool, so the ~50 ms of scrypt never blocks the event loop, and
hands the result back to the core on the loop's thread. The core bounds how
many are in flight (:data:`sig.core.auth.MAX_VERIFICATIONS`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import stat
from pathlib import Path

from sig.core.auth import TLS_PRINCIPALS, Authenticator, AuthSettings, ScryptHash, Verification
from sig.core.auth import parse_users as _parse_users
from sig.errors import UsersFileError

logger = logging.getLogger(__name__)

#: Threads that check passwords (each check takes one core for ~50 ms).
VERIFY_THREADS = 2
#: A users file larger than this is refused (a typo, not a user list).
MAX_USERS_FILE = 4 << 20


def read_users_file(path: str | os.PathLike[str]) -> dict[str, ScryptHash]:
    """The users of a users file; UsersFileError if it cannot be read or has a bad line.

    Warns when the file is readable or writable by group or others: hashes
    are slow to crack, not impossible.
    """
    file = Path(path)
    try:
        mode = file.stat().st_mode
        if file.stat().st_size > MAX_USERS_FILE:
            raise UsersFileError(f"users file {path} is larger than {MAX_USERS_FILE} bytes")
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsersFileError(f"cannot read users file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UsersFileError(f"users file {path} is not UTF-8: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning(
            "users file %s is accessible by group or others (mode %o): chmod 600 it",
            path,
            stat.S_IMODE(mode),
        )
    try:
        return _parse_users(text)
    except UsersFileError as exc:
        raise UsersFileError(f"users file {path}: {exc}") from None


class GatewaySecurity:
    """The users file and the verifier thread pool of one gateway's :class:`Authenticator`."""

    def __init__(
        self,
        auth: Authenticator,
        users_file: str | None = None,
        *,
        allow_anonymous: bool = False,
        tls_principal: str = "none",
    ) -> None:
        """Reads ``users_file`` now (UsersFileError if it cannot be used)."""
        if tls_principal not in TLS_PRINCIPALS:
            raise ValueError(f"tls_principal must be one of {', '.join(TLS_PRINCIPALS)}")
        self.auth = auth
        self.users_file = users_file
        self.allow_anonymous = allow_anonymous
        self.tls_principal = tls_principal
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._apply(read_users_file(users_file) if users_file else None)

    def _apply(self, users: dict[str, ScryptHash] | None) -> None:
        self.auth.configure(
            AuthSettings(
                users,
                allow_anonymous=self.allow_anonymous,
                tls_principal=self.tls_principal,
                source=self.users_file or "",
            )
        )

    @property
    def users(self) -> int:
        """How many users are configured (0 without a users file)."""
        return len(self.auth.settings.users or {})

    def reload(self) -> bool:
        """Read the users file again; a bad file keeps the users we had (logged). True if read."""
        if not self.users_file:
            return True
        try:
            users = read_users_file(self.users_file)
        except UsersFileError as exc:
            logger.error("reload: %s; keeping the %d users loaded before", exc, self.users)
            return False
        self._apply(users)
        logger.info("reload: %d users from %s", len(users), self.users_file)
        return True

    # --- password checks on threads --------------------------------------------

    def start(self) -> None:
        """Run the core's verifications on a thread pool of this event loop."""
        self._loop = asyncio.get_running_loop()
        self._pool = concurrent.futures.ThreadPoolExecutor(VERIFY_THREADS, "sig-verify")
        self.auth.verify = self._verify

    def stop(self) -> None:
        self.auth.verify = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _verify(self, ticket: Verification) -> None:
        """Start one check on the pool; its result goes back to the core on the loop."""
        loop, pool = self._loop, self._pool
        if loop is None or pool is None:
            self.auth.verified(ticket, False)
            return
        future = loop.run_in_executor(pool, ticket.run)
        future.add_done_callback(lambda done: self._done(ticket, done))

    def _done(self, ticket: Verification, done: asyncio.Future[bool]) -> None:
        if done.cancelled():  # the gateway is stopping: nobody is answered
            self.auth.abandon(ticket)
            return
        if done.exception() is not None:
            logger.error("password check failed: %r", done.exception())
            ok = False
        else:
            ok = done.result()
        self.auth.verified(ticket, ok)
