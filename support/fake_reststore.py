"""A stand-in for a REST identity store, speaking ma1sd's REST-store protocol
over real HTTP, modelled on a real store: netsoc's iamd (``pkg/ma1sd/ma1sd.go``).

It is :class:`support.fake_ma1sd.FakeMa1sd` with another protocol: the same
directory (``add_user``, ``users``), faults, delay, request log
(``requests``, ``requests_for``, ``password_checks()``, ``lookups()``),
``required_headers``, TLS and lifecycle. It serves, under
``/_ma1sd/backend/api/v1`` (``base_path``):

``POST /auth/login`` with ``{"auth": {"mxid", "localpart", "domain", "password"}}``:

* 400 when ``mxid`` is not ``@localpart:domain`` or ``domain`` is not the
  store's own (``domain``), or the body cannot be read;
* 404 for an unknown user; 401 for a wrong password or a disabled account;
  each of these with Go's zero value
  ``{"auth": {"success": false, "id": {"type": "", "value": ""}, "profile": {}}}``;
* 200 ``{"auth": {"success": true, "id": {"type": "localpart", "value":
  <localpart lowercased>}, "profile": {"display_name": ..., "three_pids": [...]}}}``.

``POST /identity/single`` with ``{"lookup": {"medium", "address"}}``: 200
``{"lookup": {"medium", "address", "id": {...}}}`` for a known email (and,
unlike iamd, phone number), else 404 ``{}``.

``id_type = "mxid"`` makes it answer ``{"type": "mxid", "value":
"@alice:example.org"}`` instead; ``id_override[user_id]`` makes it answer
another ``id`` for one user, in logins and lookups (None: no ``id`` at all).
"""

import json
from typing import Any, Dict, Optional, Tuple

from support.fake_ma1sd import FakeMa1sd

BASE_PATH = "/_ma1sd/backend/api/v1"
AUTH_PATH = BASE_PATH + "/auth/login"
IDENTITY_SINGLE_PATH = BASE_PATH + "/identity/single"

# What Go's encoding/json writes for a failed login: every field at its zero value.
ZERO_REPLY: Dict[str, Any] = {"auth": {"success": False, "id": {"type": "", "value": ""}, "profile": {}}}


class FakeRestStore(FakeMa1sd):
    """The fake REST store. Use as a context manager or call start() and stop()."""

    thread_name = "fake-reststore"

    def __init__(
        self,
        domain: str = "example.org",
        base_path: str = BASE_PATH,
        tls: Optional[Tuple[str, str]] = None,
        required_headers: Optional[Dict[str, str]] = None,
    ):
        super().__init__(tls=tls, required_headers=required_headers)
        self.domain = domain
        self.check_path = base_path + "/auth/login"
        self.lookup_path = base_path + "/identity/single"
        self.id_type = "localpart"
        self.id_override: Dict[str, Optional[Any]] = {}

    def reset(self) -> None:
        """Clears faults, delay, id overrides and the request log (users stay)."""
        super().reset()
        self.id_type = "localpart"
        self.id_override.clear()

    def refusal_reply(self) -> Dict[str, Any]:
        reply: Dict[str, Any] = json.loads(json.dumps(ZERO_REPLY))
        return reply

    def store_id(self, user_id: str) -> Dict[str, str]:
        """Returns the ``id`` the store answers for a user of its directory."""
        if self.id_type == "mxid":
            return {"type": "mxid", "value": user_id.lower()}
        return {"type": "localpart", "value": user_id[1:].partition(":")[0].lower()}

    def route(self, method: str, path: str, record: Dict[str, Any], raw: bytes) -> Optional[Tuple[int, Any]]:
        if method == "POST" and path == self.check_path:
            return self._auth(record, raw)
        if method == "POST" and path == self.lookup_path:
            return self._identity_single(record, raw)
        return None

    def _auth(self, record: Dict[str, Any], raw: bytes) -> Tuple[int, Any]:
        try:
            auth = json.loads(raw)["auth"]
            mxid, localpart, domain, password = auth["mxid"], auth["localpart"], auth["domain"], auth["password"]
        except (ValueError, KeyError, TypeError):
            return 400, self.refusal_reply()
        record.update(user_id=mxid, localpart=localpart, domain=domain, password=password)
        if not all(isinstance(v, str) for v in (mxid, localpart, domain, password)):
            return 400, self.refusal_reply()
        if mxid != "@%s:%s" % (localpart, domain) or domain != self.domain:
            return 400, self.refusal_reply()
        user = self.users.get(mxid.lower())
        if user is None:
            return 404, self.refusal_reply()
        if not user.enabled or user.password != password:
            return 401, self.refusal_reply()
        profile: Dict[str, Any] = {"three_pids": list(user.three_pids)}
        if user.display_name is not None:
            profile["display_name"] = user.display_name
        reply: Dict[str, Any] = {"success": True}
        self._set_id(reply, user.user_id)
        reply["profile"] = profile
        return 200, {"auth": reply}

    def _set_id(self, reply: Dict[str, Any], user_id: str) -> None:
        """Puts the ``id`` for ``user_id`` into ``reply``: ``id_override``'s, if any."""
        key = user_id.lower()
        if key not in self.id_override:
            reply["id"] = self.store_id(user_id)
        elif self.id_override[key] is not None:
            reply["id"] = self.id_override[key]

    def _identity_single(self, record: Dict[str, Any], raw: bytes) -> Tuple[int, Any]:
        try:
            lookup = json.loads(raw)["lookup"]
            medium, address = lookup["medium"], lookup["address"]
        except (ValueError, KeyError, TypeError):
            return 400, {}
        record.update(medium=medium, address=address)
        user_id = self._lookup(medium, address) if isinstance(medium, str) and isinstance(address, str) else None
        if user_id is None:
            return 404, {}
        found: Dict[str, Any] = {"medium": medium, "address": address}
        self._set_id(found, user_id)
        return 200, {"lookup": found}
