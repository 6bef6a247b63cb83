"""``sig passwd FILE USER``: manage a users file (like ``mosquitto_passwd``), and read passwords.

The file holds one ``name:$scrypt$n=..,r=..,p=..$SALT$HASH`` line per user
(:mod:`sig.core.auth`); a password is never written or taken in plain text.
The password comes from a prompt (asked twice) or ``--password-stdin``, never
from a flag: a flag's value is visible to every user of the machine in
``ps`` and ``/proc/PID/cmdline``, and stays in the shell's history.

The file is created with mode 0600 if missing, and every change is written to
a temporary file in the same directory, flushed and renamed over the old one,
so a crash or a full disk never leaves half a users file for the gateway to
read at its next SIGHUP.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from sig.core.auth import check_user_name, format_users, hash_password
from sig.errors import InvalidNameError, UsersFileError
from sig.routers.files import write_atomically

#: Where client commands take a password from when neither a prompt nor stdin is wanted.
PASSWORD_ENV = "SIG_PASSWORD"
#: Why there is no --password flag (the help of every command says it).
NO_PASSWORD_FLAG = (
    "there is no --password flag: command lines are visible to every user in ps"
    " and stay in the shell history"
)


class PasswdError(Exception):
    """What ``sig passwd`` could not do (printed, exit status 1)."""


def read_password_stdin() -> str:
    """One line of stdin, without its line end (``--password-stdin``)."""
    line = sys.stdin.readline()
    return line[:-1] if line.endswith("\n") else line


def prompt_new_password(user: str) -> str:
    """A new password from the terminal, asked twice (PasswdError if they differ)."""
    first = getpass.getpass(f"Password for {user}: ")
    if first != getpass.getpass("Again: "):
        raise PasswdError("the passwords do not match")
    return first


def client_password(user: str, from_stdin: bool) -> str:
    """A client's password: ``--password-stdin``, else $SIG_PASSWORD, else a prompt."""
    if from_stdin:
        return read_password_stdin()
    env = os.environ.get(PASSWORD_ENV)
    if env is not None:
        return env
    return getpass.getpass(f"Password for {user}: ")


def read_entries(path: Path) -> dict[str, str]:
    """The users of an existing file as name -> hash text ({} if there is no file)."""
    from sig.routers.auth import read_users_file

    if not path.exists():
        return {}
    return {name: str(entry) for name, entry in read_users_file(path).items()}


def cmd_passwd(args: argparse.Namespace) -> int:
    """Add, change (``--password-stdin`` or a prompt) or ``--delete`` one user of FILE."""
    path = Path(args.file)
    try:
        user = check_user_name(args.user)
        entries = read_entries(path)
        if args.delete:
            if entries.pop(user, None) is None:
                raise PasswdError(f"no user {user!r} in {path}")
            action = "deleted"
        else:
            password = read_password_stdin() if args.password_stdin else prompt_new_password(user)
            if not password:
                raise PasswdError("the password is empty")
            action = "changed" if user in entries else "added"
            entries[user] = hash_password(password)
        write_atomically(path, format_users(entries))
    except (UsersFileError, InvalidNameError) as exc:
        print(f"sig passwd: {exc}", file=sys.stderr)
        return 2
    except (PasswdError, OSError) as exc:
        print(f"sig passwd: {exc}", file=sys.stderr)
        return 1
    print(f"sig passwd: user {user} {action} in {path}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The ``sig passwd`` subcommand."""
    p = sub.add_parser(
        "passwd",
        help="add, change or delete a user of a users file (sig serve --users)",
        description="Manage a users file like mosquitto_passwd: scrypt hashes, never plain"
        " text; the file is created 0600 and replaced atomically. " + NO_PASSWORD_FLAG + ".",
    )
    p.add_argument("file", help="the users file (created if missing)")
    p.add_argument("user", help="the user name")
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin instead of a prompt",
    )
    how.add_argument("--delete", action="store_true", help="remove the user")
