"""Reading ma1sd's replies: strict about what grants a login, tolerant of
what ma1sd is known to send (or leave out).

A ``check_credentials`` reply looks like::

    {"auth": {"success": true,
              "display_name": "Alice",                       # legacy copy
              "profile": {"display_name": "Alice",
                          "three_pids": [{"medium": "email", "address": "a@b.c"}]}}}
"""

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Optional, Tuple

MAX_DISPLAYNAME_LENGTH = 256  # Synapse refuses longer display names.
SUPPORTED_MEDIA = ("email", "msisdn")


class MalformedReply(Exception):
    """ma1sd's reply cannot be trusted; the message says why (no secrets in it)."""


@dataclass(frozen=True)
class ThreePid:
    """A 3PID as ma1sd sent it (medium lowercased, address as sent)."""

    medium: str
    address: str


@dataclass(frozen=True)
class AuthReply:
    """What a ``check_credentials`` reply says.

    ``three_pids`` is None when ma1sd sent no list at all, which is different
    from an empty list: only an explicit list may remove local 3PIDs.
    """

    success: bool
    display_name: Optional[str] = None
    three_pids: Optional[Tuple[ThreePid, ...]] = None


def decode_json(body: bytes) -> Any:
    """Returns the decoded JSON value of ``body``; raises MalformedReply."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedReply("reply is not UTF-8") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        raise MalformedReply("reply is not JSON") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError("%s is not JSON" % name)


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # e.g. 1e400: valid JSON syntax, no JSON number
        raise ValueError("number out of range")
    return value


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def parse_check_credentials(value: Any) -> AuthReply:
    """Returns the AuthReply for a decoded ``check_credentials`` reply.

    Raises MalformedReply when the reply has the wrong shape. A login is
    granted only when ``auth.success`` is exactly JSON ``true``.
    """
    if not isinstance(value, dict):
        raise MalformedReply("reply is %s, not an object" % _describe(value))
    auth = value.get("auth")
    if not isinstance(auth, dict):
        raise MalformedReply("'auth' is %s, not an object" % _describe(auth))
    success = auth.get("success")
    if not isinstance(success, bool):
        raise MalformedReply("'auth.success' is %s, not a boolean" % _describe(success))
    if not success:
        return AuthReply(success=False)

    profile = auth.get("profile")
    if profile is not None and not isinstance(profile, dict):
        raise MalformedReply("'auth.profile' is %s, not an object" % _describe(profile))
    profile = profile or {}

    display_name = _display_name(profile.get("display_name"), "auth.profile.display_name")
    if display_name is None:
        display_name = _display_name(auth.get("display_name"), "auth.display_name")

    raw_pids = profile.get("three_pids")
    three_pids: Optional[Tuple[ThreePid, ...]] = None
    if raw_pids is not None:
        if not isinstance(raw_pids, list):
            raise MalformedReply("'auth.profile.three_pids' is %s, not a list" % _describe(raw_pids))
        three_pids = tuple(_three_pid(entry, i) for i, entry in enumerate(raw_pids))
    return AuthReply(success=True, display_name=display_name, three_pids=three_pids)


def _display_name(value: Any, where: str) -> Optional[str]:
    """Returns a usable display name, or None when absent, null or blank."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedReply("'%s' is %s, not a string" % (where, _describe(value)))
    value = value.strip()
    if not value:
        return None
    return value[:MAX_DISPLAYNAME_LENGTH]


def _three_pid(entry: Any, index: int) -> ThreePid:
    where = "auth.profile.three_pids[%d]" % index
    if not isinstance(entry, dict):
        raise MalformedReply("'%s' is %s, not an object" % (where, _describe(entry)))
    medium = entry.get("medium")
    address = entry.get("address")
    if not isinstance(medium, str) or not isinstance(address, str):
        raise MalformedReply("'%s' needs string 'medium' and 'address'" % where)
    return ThreePid(medium=medium.strip().lower(), address=address.strip())


def parse_lookup(value: Any) -> Optional[str]:
    """Returns the Matrix ID from an identity lookup reply, or None for ``{}``.

    Raises MalformedReply when the reply has the wrong shape.
    """
    if not isinstance(value, dict):
        raise MalformedReply("lookup reply is %s, not an object" % _describe(value))
    mxid = value.get("mxid")
    if mxid is None:
        return None
    if not isinstance(mxid, str):
        raise MalformedReply("'mxid' is %s, not a string" % _describe(mxid))
    return mxid


_NON_DIGITS = re.compile(r"[^0-9]")
_PHONE_CHARS = re.compile(r"[0-9+()./ -]+")


def canonical_threepid(medium: str, address: str) -> Optional[Tuple[str, str]]:
    """Returns (medium, address) in the form Synapse stores, or None when the
    medium is not one Synapse keeps locally or the address is unusable.

    Emails: local part casefolded, domain lowercased. Phone numbers: digits only.
    """
    medium = medium.lower()
    if medium == "email":
        address = address.strip()
        if address.count("@") != 1:
            return None
        local, domain = address.split("@")
        if not local or not domain or any(c.isspace() for c in address):
            return None
        return medium, "%s@%s" % (local.casefold(), domain.lower())
    if medium == "msisdn":
        if not _PHONE_CHARS.fullmatch(address.strip()):
            return None
        digits = _NON_DIGITS.sub("", address)
        if not digits or len(digits) > 20:
            return None
        return medium, digits
    return None
