"""Reading ma1sd's replies: strict about what grants a login, tolerant of
what ma1sd is known to send (or leave out).

A ``check_credentials`` reply looks like::

    {"auth": {"success": true,
              "display_name": "Alice",                       # legacy copy
              "profile": {"display_name": "Alice",
                          "three_pids": [{"medium": "email", "address": "a@b.c"}]}}}

A REST identity store's ``auth/login`` reply (``backend: rest``) has the same
``auth`` object plus an ``id`` naming the user (:func:`parse_rest_auth`); its
``identity/single`` reply is read by :func:`parse_rest_lookup`.
"""

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import phonenumbers

from rest_auth_provider.safetext import printable

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
        return json.loads(
            text, object_pairs_hook=_unique_keys, parse_constant=_refuse_constant, parse_float=_finite_float
        )
    except (ValueError, RecursionError):
        raise MalformedReply("reply is not JSON") from None


def _unique_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    """Returns the object made of ``pairs``; raises MalformedReply when a key
    repeats (JSON leaves that undefined: "last wins" would let a second
    ``"success": true`` override a ``false``)."""
    value: Dict[str, Any] = {}
    for key, item in pairs:
        if key in value:
            raise MalformedReply("reply has a duplicate key '%s'" % printable(key, 50))
        value[key] = item
    return value


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
    """Returns a usable display name, or None when absent, null or blank
    (also once cleaned, see clean_display_name)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedReply("'%s' is %s, not a string" % (where, _describe(value)))
    return clean_display_name(value)


# Line and paragraph breaks that are not category Cc become a space, as do
# the whitespace controls (tab, LF, VT, FF, CR, NEL).
_BREAKS_TO_SPACE = frozenset("\t\n\v\f\r\x85\u2028\u2029")
# Bidi embeddings, overrides (U+202A-U+202E) and isolates (U+2066-U+2069):
# they reorder the text around a name wherever it is shown.
_BIDI_CONTROLS = frozenset(chr(c) for c in list(range(0x202A, 0x202F)) + list(range(0x2066, 0x206A)))
_REMOVED_CATEGORIES = ("Cc", "Cs", "Zl", "Zp")


def clean_display_name(value: str) -> Optional[str]:
    """Returns ``value`` as a display name Synapse can store and clients can
    show safely, or None when nothing is left of it.

    Control characters (Unicode category Cc), lone surrogates (Cs), line and
    paragraph separators (Zl, Zp) and the bidi embedding, override and isolate
    controls are removed, except that whitespace controls and line breaks
    become a space; runs of whitespace become one space; the result is
    stripped and cut to MAX_DISPLAYNAME_LENGTH characters. Everything else
    (accents, CJK, right-to-left letters, emoji with zero-width joiners) is
    kept.
    """
    kept = []
    for c in value:
        if c in _BREAKS_TO_SPACE:
            kept.append(" ")
        elif c in _BIDI_CONTROLS or unicodedata.category(c) in _REMOVED_CATEGORIES:
            continue
        else:
            kept.append(c)
    name = " ".join("".join(kept).split())[:MAX_DISPLAYNAME_LENGTH].rstrip()
    return name or None


def _string_pair(value: Any, where: str, first: str, second: str) -> Tuple[str, str]:
    """Returns the string fields ``first`` and ``second`` of the object found at
    ``where``; raises MalformedReply when it is not an object holding both as strings."""
    if not isinstance(value, dict):
        raise MalformedReply("'%s' is %s, not an object" % (where, _describe(value)))
    a, b = value.get(first), value.get(second)
    if not isinstance(a, str) or not isinstance(b, str):
        raise MalformedReply("'%s' needs string '%s' and '%s'" % (where, first, second))
    return a, b


def _three_pid(entry: Any, index: int) -> ThreePid:
    medium, address = _string_pair(entry, "auth.profile.three_pids[%d]" % index, "medium", "address")
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


@dataclass(frozen=True)
class StoreUserId:
    """The ``id`` object of a REST identity store's reply: ``type`` lowercased
    (``localpart`` and ``mxid`` are the ones ma1sd knows; a store may send
    anything), ``value`` as sent."""

    type: str
    value: str


def parse_store_id(value: Any, where: str) -> StoreUserId:
    """Returns the StoreUserId of the ``id`` object found at ``where``.

    Raises MalformedReply when it is not an object with string ``type`` and
    ``value``.
    """
    kind, text = _string_pair(value, where, "type", "value")
    return StoreUserId(type=kind.lower(), value=text)


def parse_rest_auth(value: Any) -> Tuple[AuthReply, Optional[StoreUserId]]:
    """Returns the AuthReply of a decoded REST store ``auth/login`` reply and
    the user its ``auth.id`` names; that id is None when the store refused
    the credentials (whatever ``id`` it sent) or sent no ``id``.

    The reply is read as ma1sd's ``check_credentials`` reply is
    (:func:`parse_check_credentials`): ``auth.success`` exactly ``true``,
    display name and 3PIDs under ``auth.profile``. Raises MalformedReply
    when the reply has the wrong shape.
    """
    reply = parse_check_credentials(value)
    if not reply.success:
        return reply, None
    raw_id = value["auth"].get("id")
    if raw_id is None:
        return reply, None
    return reply, parse_store_id(raw_id, "auth.id")


def parse_rest_lookup(value: Any) -> Optional[StoreUserId]:
    """Returns the user a decoded REST store ``identity/single`` reply names,
    or None for ``{}`` (no user for that 3PID).

    A hit is ``{"lookup": {"medium": ..., "address": ..., "id": {"type":
    ..., "value": ...}}}``. Raises MalformedReply for any other shape.
    """
    if not isinstance(value, dict):
        raise MalformedReply("lookup reply is %s, not an object" % _describe(value))
    lookup = value.get("lookup")
    if lookup is None:
        if any(key != "lookup" for key in value):
            raise MalformedReply("lookup reply is neither {} nor has a 'lookup' object")
        return None
    if not isinstance(lookup, dict):
        raise MalformedReply("'lookup' is %s, not an object" % _describe(lookup))
    for key in ("medium", "address"):
        if lookup.get(key) is not None and not isinstance(lookup[key], str):
            raise MalformedReply("'lookup.%s' is %s, not a string" % (key, _describe(lookup[key])))
    if lookup.get("id") is None:
        raise MalformedReply("'lookup' has no 'id'")
    return parse_store_id(lookup["id"], "lookup.id")


# What a phone number may be written with: an optional leading "+", then ASCII
# digits and the usual separators (no letters: "ext 9", "x9" or "#9" would be
# read as an extension, which an msisdn has not).
_PHONE_TEXT = re.compile(r"\+?[0-9()./ -]*[0-9][0-9()./ -]*")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def canonical_threepid(medium: str, address: str) -> Optional[Tuple[str, str]]:
    """Returns (medium, address) in the form Synapse stores, or None when the
    medium is not one Synapse keeps locally or the address is unusable.

    Emails: local part casefolded, domain lowercased (as Synapse does).
    Phone numbers: the international number in E.164 without the "+", as
    Synapse's phone_number_to_msisdn makes it (``+44 (0) 7700 900999`` and
    ``0044 7700 900999`` give ``447700900999``); text without a "+" or "00"
    is read as digits that start with the country code; None unless the
    phonenumbers library parses it as a possible number.
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
        msisdn = _msisdn(address)
        return None if msisdn is None else (medium, msisdn)
    return None


def _msisdn(text: str) -> Optional[str]:
    """Returns the E.164 digits of the phone number ``text``, or None when it
    is not a possible international number."""
    text = text.strip()
    if not _PHONE_TEXT.fullmatch(text):
        return None
    if text.startswith("00"):
        text = "+" + text[2:]
    elif not text.startswith("+"):
        text = "+" + text
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    # An extension cannot pass _PHONE_TEXT today; checked in case phonenumbers
    # learns another way of writing one.
    if number.extension or not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]


def untrusted_threepid_reason(medium: str, address: str) -> Optional[str]:
    """Returns why a 3PID that ma1sd listed must not be stored, or None when
    it may be (or is not an email).

    An email address is stored only when ma1sd's text already is the address
    Synapse would store, up to ASCII case: ``ſam@example.org``, ``boß@...``
    or a Kelvin sign in the domain fold to someone else's address, and ma1sd
    listing an address proves nothing about who owns the mailbox. Addresses
    with invisible or control characters are refused too.
    """
    if medium.strip().lower() != "email":
        return None
    canonical = canonical_threepid("email", address)
    if canonical is None:
        return "is not an email address"
    sent = address.strip()
    if not sent.isprintable():
        return "holds a control or invisible character"
    if canonical[1] != sent.translate(_ASCII_LOWER):
        return "folds to %s, which is not the address as sent" % printable(canonical[1])
    return None
