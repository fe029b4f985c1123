"""Turning what a client typed into a user ID on this server.

``alice``, ``Alice`` and ``@alice:example.org`` all name the same user. Names
that cannot be a user ID here are refused before anyone asks ma1sd.
"""

import re
from dataclasses import dataclass
from typing import Any, Optional

MAX_USER_ID_LENGTH = 255  # Synapse's limit on a whole user ID.
# Longer passwords are refused without asking the backend: no directory
# needs more, and an 8 MB password would otherwise become an 8 MB request.
MAX_PASSWORD_BYTES = 1024

# What Synapse accepts for new accounts (lowercase only).
_NEW_LOCALPART = re.compile(r"[a-z0-9._=/+-]+")
# What the Matrix spec allows for historical user IDs: printable ASCII but ':'.
_HISTORICAL_LOCALPART = re.compile(r"[\x21-\x39\x3b-\x7e]+")


class LocalRefusal(Exception):
    """The login is refused without asking ma1sd; ``str()`` says why."""


@dataclass(frozen=True)
class LoginName:
    """A login name resolved against this server.

    ``localpart`` is lowercased; ``registrable`` says whether Synapse would
    accept it for a new account.
    """

    localpart: str
    user_id: str
    registrable: bool


def password_problem(password: Any) -> Optional[str]:
    """Returns why ``password`` is refused without asking the backend, or
    None when it may be sent.

    An empty password is never sent: many LDAP servers treat a bind with an
    empty password as an anonymous bind that "succeeds" (RFC 4513, 5.1.2).
    """
    if not isinstance(password, str) or not password:
        return "empty or missing password"
    if len(password.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES:
        return "password longer than %d bytes" % MAX_PASSWORD_BYTES
    return None


def parse_login_name(raw: Any, server_name: str) -> LoginName:
    """Returns the LoginName for ``raw``; raises LocalRefusal when it cannot
    name a user on ``server_name``."""
    if not isinstance(raw, str) or not raw:
        raise LocalRefusal("no user name given")
    if raw.startswith("@"):
        if ":" not in raw:
            raise LocalRefusal("user ID without a server name")
        localpart, domain = raw[1:].split(":", 1)
        if domain.lower() != server_name.lower():
            raise LocalRefusal("user ID on another server")
    elif ":" in raw:
        raise LocalRefusal("user name contains ':' but does not start with '@'")
    else:
        localpart = raw
    if not localpart:
        raise LocalRefusal("empty user name")
    if not localpart.isascii():
        raise LocalRefusal("user name is not ASCII")
    localpart = localpart.lower()
    if not _HISTORICAL_LOCALPART.fullmatch(localpart):
        raise LocalRefusal("user name contains characters a user ID cannot have")
    user_id = "@%s:%s" % (localpart, server_name)
    if len(user_id) > MAX_USER_ID_LENGTH:
        raise LocalRefusal("user ID longer than %d characters" % MAX_USER_ID_LENGTH)
    registrable = bool(_NEW_LOCALPART.fullmatch(localpart)) and not localpart.startswith("_")
    return LoginName(localpart=localpart, user_id=user_id, registrable=registrable)
