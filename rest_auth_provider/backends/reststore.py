"""``backend: rest``: a REST identity store asked directly, without ma1sd.

The store speaks ma1sd's REST-store protocol (ma1sd's ``rest.endpoints.*``)::

    POST <rest.auth>    {"auth": {"mxid": "@alice:example.org", "localpart": "alice",
                                  "domain": "example.org", "password": "..."}}
    <- 200 {"auth": {"success": true, "id": {"type": "localpart", "value": "alice"},
                     "profile": {"display_name": "Alice", "three_pids": [...]}}}
    <- 401 / 404 {"auth": {"success": false, ...}}      (wrong password / unknown user)
    <- 400                                             (the store refused the request:
                                                        typically not its domain)

    POST <rest.identity.single>   {"lookup": {"medium": "email", "address": "alice@example.org"}}
    <- 200 {"lookup": {"medium": ..., "address": ..., "id": {"type": "localpart", "value": "alice"}}}
    <- 200 {} or 404                                   (no user for it)

Unlike ma1sd, which uses the store's ``id`` only to publish invites, a login
is granted only when the ``id`` names the very user that logs in. Nothing
here needs Synapse; request bodies hold passwords and are never logged.
"""

import logging
from typing import Optional, Tuple

from rest_auth_provider.config import ProviderConfig
from rest_auth_provider.response import (
    AuthReply,
    MalformedReply,
    StoreUserId,
    parse_check_credentials,
    parse_rest_auth,
    parse_rest_lookup,
)
from rest_auth_provider.safetext import printable
from rest_auth_provider.transport import BackendError, HttpReply, Transport, decode_reply

logger = logging.getLogger(__name__)

# Statuses with which real stores (netsoc's iamd) refuse credentials: 401 for
# a wrong password or an unverified or expired account, 404 for an unknown user.
_REFUSAL_STATUSES = (401, 404)

# Matrix IDs are ASCII; only ASCII letters are folded, so that no Unicode case
# rule (the Kelvin sign folds to "k") can make another name look like ours.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _ascii_lower(text: str) -> str:
    return text.translate(_ASCII_LOWER)


def split_user_id(user_id: str) -> Tuple[str, str]:
    """Returns (localpart, domain) of ``@localpart:domain``; the domain keeps
    its port, if any."""
    localpart, _, domain = user_id[1:].partition(":")
    return localpart, domain


class RestStoreBackend:
    """Checks passwords and maps 3PIDs to users with a REST identity store."""

    name = "the REST store"
    kind = "rest"

    def __init__(self, config: ProviderConfig, transport: Transport):
        self._config = config
        self._transport = transport

    @property
    def threepid_lookup_enabled(self) -> bool:
        """Returns True unless ``threepid_login.enabled`` is false or
        ``rest.identity.single`` is empty."""
        return self._config.threepid_login.enabled and self._config.rest_identity_single_url is not None

    async def verify_password(self, user_id: str, password: str) -> AuthReply:
        """Returns the store's verdict on ``password`` for the canonical,
        lowercased ``user_id``: success only on a 2xx reply whose
        ``auth.success`` is ``true`` and whose ``auth.id`` names ``user_id``;
        ``success`` False when the store refused the credentials (a 2xx with
        ``success: false``, or 401 / 404 with such a body).

        Raises BackendError for anything else, e.g. an ``id`` naming someone
        else, a 400 (the store refused the request itself), a 5xx.
        """
        localpart, domain = split_user_id(user_id)
        body = {"auth": {"mxid": user_id, "localpart": localpart, "domain": domain, "password": password}}
        reply = await self._transport.request("auth_login", "POST", self._config.rest_auth_url, json_body=body)
        if reply.status == 400:
            raise BackendError(
                "HTTP 400: the store refused the request itself; its domain may not be %s (Synapse's server_name, "
                "sent as 'domain')" % printable(domain, 100)
            )
        if reply.status in _REFUSAL_STATUSES:
            return _refusal(reply)
        value = decode_reply(reply)
        try:
            verdict, store_id = parse_rest_auth(value)
        except MalformedReply as e:
            raise BackendError(str(e)) from None
        if not verdict.success:
            return verdict
        problem = _mismatch(store_id, user_id, localpart, domain)
        if problem is not None:
            raise BackendError(problem)
        return verdict

    async def lookup_threepid(self, medium: str, address: str, server_name: str) -> Optional[str]:
        """Returns the Matrix ID the store maps the canonical 3PID to (a
        ``localpart`` id becomes ``@<localpart lowercased>:<server_name>``, an
        ``mxid`` id is returned as sent), or None when it knows no user for
        it (``{}`` or 404) or the lookup is turned off.

        Raises BackendError for any other reply.
        """
        url = self._config.rest_identity_single_url
        if url is None or not self.threepid_lookup_enabled:
            return None
        body = {"lookup": {"medium": medium, "address": address}}
        reply = await self._transport.request("identity_single", "POST", url, json_body=body)
        if reply.status == 404:
            return None
        value = decode_reply(reply)
        try:
            store_id = parse_rest_lookup(value)
        except MalformedReply as e:
            raise BackendError(str(e)) from None
        if store_id is None:
            return None
        if store_id.type == "localpart":
            if not store_id.value or ":" in store_id.value:
                raise BackendError("'lookup.id' is not a localpart: '%s'" % printable(store_id.value, 100))
            return "@%s:%s" % (_ascii_lower(store_id.value), server_name)
        if store_id.type == "mxid":
            return store_id.value
        raise BackendError("'lookup.id' has the unknown type '%s'" % printable(store_id.type, 50))

    async def close(self) -> None:
        """Closes idle connections."""
        await self._transport.close()


def _refusal(reply: HttpReply) -> AuthReply:
    """Returns the refusal a 401 or 404 reply carries; raises
    BackendError("HTTP <status>") when its body is not a JSON refusal (an
    authenticating proxy's 401, a wrong path's 404)."""
    try:
        verdict = parse_check_credentials(decode_reply(reply, accept=lambda _: True))
    except (BackendError, MalformedReply):
        raise BackendError("HTTP %d" % reply.status) from None
    if verdict.success:
        raise BackendError("HTTP %d" % reply.status)
    return verdict


def _mismatch(store_id: Optional[StoreUserId], user_id: str, localpart: str, domain: str) -> Optional[str]:
    """Returns why a successful reply's ``id`` does not name ``user_id``, or
    None when it does. Case is compared for ASCII letters only."""
    if store_id is None:
        return "answered success without an 'id' (expected %s)" % printable(user_id, 100)
    if store_id.type == "localpart":
        if _ascii_lower(store_id.value) == _ascii_lower(localpart):
            return None
        named = "@%s:%s" % (store_id.value, domain)
    elif store_id.type == "mxid":
        if _ascii_lower(store_id.value) == _ascii_lower(user_id):
            return None
        named = store_id.value
    else:
        return "answered success for an 'id' of unknown type '%s' ('%s'), not %s" % (
            printable(store_id.type, 50),
            printable(store_id.value, 100),
            printable(user_id, 100),
        )
    return "answered for %s, not %s" % (printable(named, 100), printable(user_id, 100))
