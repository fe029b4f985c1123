"""A small client for Synapse's client-server API, used as a user would."""

import hashlib
import hmac
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple
from urllib.parse import quote

import requests


class MatrixClient:
    """Talks to one Synapse process (or worker) over HTTP."""

    def __init__(self, base_url: str, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def _url(self, path: str) -> str:
        return self.base_url + path

    def login(
        self,
        user: Optional[str] = None,
        password: Optional[str] = None,
        identifier: Optional[Dict[str, Any]] = None,
        version: str = "r0",
        body: Optional[Dict[str, Any]] = None,
    ) -> requests.Response:
        """POSTs a password login; returns the raw response."""
        if body is None:
            body = {"type": "m.login.password"}
            if identifier is None and user is not None:
                identifier = {"type": "m.id.user", "user": user}
            if identifier is not None:
                body["identifier"] = identifier
            if password is not None:
                body["password"] = password
        return self.session.post(self._url("/_matrix/client/%s/login" % version), json=body, timeout=self.timeout)

    def login_ok(self, user: str, password: str) -> Dict[str, Any]:
        """Logs in and returns the response body; fails the test on non-200."""
        r = self.login(user, password)
        assert r.status_code == 200, "login of %r: HTTP %d %s" % (user, r.status_code, r.text)
        return dict(r.json())

    def _auth(self, token: str) -> Dict[str, str]:
        return {"Authorization": "Bearer %s" % token}

    def whoami_status(self, token: str) -> int:
        """Returns the HTTP status of whoami with ``token`` (401 once it stopped working)."""
        url = self._url("/_matrix/client/r0/account/whoami")
        return self.session.get(url, headers=self._auth(token), timeout=self.timeout).status_code

    def whoami(self, token: str) -> str:
        r = self.session.get(
            self._url("/_matrix/client/r0/account/whoami"), headers=self._auth(token), timeout=self.timeout
        )
        r.raise_for_status()
        return str(r.json()["user_id"])

    def profile(self, user_id: str) -> requests.Response:
        return self.session.get(self._url("/_matrix/client/r0/profile/%s" % quote(user_id)), timeout=self.timeout)

    def displayname(self, user_id: str) -> Optional[str]:
        r = self.session.get(
            self._url("/_matrix/client/r0/profile/%s/displayname" % quote(user_id)), timeout=self.timeout
        )
        r.raise_for_status()
        name = r.json().get("displayname")
        return None if name is None else str(name)

    def threepids(self, token: str) -> List[Dict[str, Any]]:
        r = self.session.get(
            self._url("/_matrix/client/r0/account/3pid"), headers=self._auth(token), timeout=self.timeout
        )
        r.raise_for_status()
        return list(r.json()["threepids"])

    def threepid_set(self, token: str) -> Set[Tuple[str, str]]:
        return {(t["medium"], t["address"]) for t in self.threepids(token)}

    def delete_threepid(self, token: str, medium: str, address: str) -> None:
        """Removes one of the user's own 3PIDs, as a client's settings page does."""
        r = self.session.post(
            self._url("/_matrix/client/r0/account/3pid/delete"),
            json={"medium": medium, "address": address},
            headers=self._auth(token),
            timeout=self.timeout,
        )
        assert r.status_code == 200, r.text

    def create_room(self, token: str) -> str:
        r = self.session.post(
            self._url("/_matrix/client/r0/createRoom"), json={}, headers=self._auth(token), timeout=self.timeout
        )
        r.raise_for_status()
        return str(r.json()["room_id"])

    def member_event(self, token: str, room_id: str, user_id: str) -> Dict[str, Any]:
        path = "/_matrix/client/r0/rooms/%s/state/m.room.member/%s" % (quote(room_id), quote(user_id))
        r = self.session.get(self._url(path), headers=self._auth(token), timeout=self.timeout)
        r.raise_for_status()
        return dict(r.json())

    def versions(self) -> requests.Response:
        return self.session.get(self._url("/_matrix/client/versions"), timeout=self.timeout)

    def register_admin(self, shared_secret: str, localpart: str, password: str) -> Dict[str, Any]:
        """Creates an admin through the shared-secret registration API."""
        url = self._url("/_synapse/admin/v1/register")
        nonce = self.session.get(url, timeout=self.timeout).json()["nonce"]
        mac = hmac.new(shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(nonce.encode() + b"\x00" + localpart.encode() + b"\x00" + password.encode() + b"\x00admin")
        body = {"nonce": nonce, "username": localpart, "password": password, "admin": True, "mac": mac.hexdigest()}
        r = self.session.post(url, json=body, timeout=self.timeout)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def deactivate(self, admin_token: str, user_id: str) -> None:
        r = self.session.post(
            self._url("/_synapse/admin/v1/deactivate/%s" % quote(user_id)),
            json={"erase": False},
            headers=self._auth(admin_token),
            timeout=self.timeout,
        )
        assert r.status_code == 200, r.text

    def reactivate(self, admin_token: str, user_id: str, password: str) -> None:
        """Reactivates a deactivated account through the admin API. Every
        release from 1.19 accepts ``deactivated: false`` with a new local
        password (older ones require the password)."""
        r = self.session.put(
            self._url("/_synapse/admin/v2/users/%s" % quote(user_id)),
            json={"deactivated": False, "password": password},
            headers=self._auth(admin_token),
            timeout=self.timeout,
        )
        assert r.status_code == 200, r.text

    def register_as_appservice(self, as_token: str, localpart: str) -> requests.Response:
        """Registers ``localpart`` as an application service does (its
        ``as_token``, type ``m.login.application_service``; 1.19 ignores the type)."""
        return self.session.post(
            self._url("/_matrix/client/r0/register"),
            json={"type": "m.login.application_service", "username": localpart},
            headers=self._auth(as_token),
            timeout=self.timeout,
        )


def logins_at_once(base_urls: Sequence[str], credentials: Sequence[Tuple[str, str]]) -> List[requests.Response]:
    """Logs every (user, password) in at the same time, one thread and one
    connection each, the i-th through ``base_urls[i % len(base_urls)]``."""

    def login(i: int) -> requests.Response:
        user, password = credentials[i]
        return MatrixClient(base_urls[i % len(base_urls)]).login(user, password)

    with ThreadPoolExecutor(max_workers=len(credentials)) as pool:
        return list(pool.map(login, range(len(credentials))))


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.1) -> Any:
    """Returns the first truthy result of ``predicate()``, or its last result."""
    deadline = time.monotonic() + timeout
    result = predicate()
    while not result and time.monotonic() < deadline:
        time.sleep(interval)
        result = predicate()
    return result
