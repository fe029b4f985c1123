"""Email and phone login for users Synapse has never seen (check_3pid_auth).

On Synapse 1.46.0-1.47.1 the legacy ``password_providers:`` shim drops
``check_3pid_auth`` (fixed in 1.48.0): there a first login by email through a
legacy-style block is refused, and the test says so.

The lookup is ma1sd's ``GET /_matrix/identity/api/v1/lookup`` or, with
``backend: rest``, the store's ``POST identity/single``; the tests marked
``backend("rest")`` cover what only the store's answers can say.
"""

from pathlib import Path
from typing import List

import pytest
import requests

from support.fake_ma1sd import FakeUser
from support.fake_reststore import FakeRestStore
from support.harness import SynapseServer, module_block, supports_modules_style, synapse_version
from support.matrix_client import MatrixClient
from tests.integration.conftest import BACKEND_NAME, TIMEOUT, Homeserver, check_started, new_password, with_backend


def shim_drops_3pid_auth(hs: Homeserver) -> bool:
    """Returns True on 1.46.0-1.47.1 with the legacy style (Synapse bug #11340)."""
    return hs.style == "password_providers" and (1, 46, 0) <= synapse_version() < (1, 48, 0)


def logged_in_by_3pid(hs: Homeserver, r: requests.Response, user: FakeUser) -> bool:
    """Asserts that the 3PID login ``r`` logged ``user`` in (200, their user ID) or, where the
    shim drops 3PID auth, was refused (403); returns True when it logged ``user`` in."""
    if shim_drops_3pid_auth(hs):
        assert r.status_code == 403
        return False
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] == user.user_id
    return True


def login_versions(hs: Homeserver) -> List[str]:
    """Returns the client API versions this Synapse serves /login on."""
    v3 = hs.client.session.get(hs.client.base_url + "/_matrix/client/v3/login", timeout=10).status_code == 200
    return ["r0", "v3"] if v3 else ["r0"]


def test_first_login_by_email_creates_the_account(hs: Homeserver) -> None:
    for version in login_versions(hs):
        tag = "%s-%s" % (version, new_password()[-8:])
        user = hs.new_user("mail", display_name="Mail User", emails=("first.login-%s@example.org" % tag,))
        address = "First.Login-%s@Example.org" % tag
        r = hs.client.login(
            identifier={"type": "m.id.thirdparty", "medium": "email", "address": address},
            password=user.password,
            version=version,
        )
        if shim_drops_3pid_auth(hs):
            assert r.status_code == 403
            assert hs.client.profile(user.user_id).status_code == 404
            continue
        assert r.status_code == 200, (version, r.text)
        body = r.json()
        assert body["user_id"] == user.user_id
        assert hs.client.displayname(user.user_id) == "Mail User"
        assert hs.client.threepid_set(body["access_token"]) == {("email", "first.login-%s@example.org" % tag)}
        assert hs.ma1sd.lookups()[-1]["medium"] == "email"


def test_first_login_by_phone_creates_the_account(hs: Homeserver) -> None:
    digits = "".join(c for c in new_password()[-12:] if c.isdigit())[:3].ljust(3, "0")
    user = hs.new_user("phone", msisdns=("+353 85 765 4%s" % digits,))
    r = hs.client.login(
        # Synapse reads "number" even when "phone" (the spec's name) is there.
        identifier={
            "type": "m.id.phone",
            "country": "IE",
            "phone": "085 765 4%s" % digits,
            "number": "085 765 4%s" % digits,
        },
        password=user.password,
    )
    if logged_in_by_3pid(hs, r, user):
        assert hs.ma1sd.lookups()[-1]["address"] == "353857654%s" % digits


def test_unknown_address_wrong_password_and_foreign_ids_are_403(hs: Homeserver) -> None:
    user = hs.new_user("mail", emails=("known-%s@example.org" % new_password()[-6:],))
    foreign = hs.ma1sd.add_user("@someone:elsewhere.example", new_password(), emails=("foreign@example.org",))
    cases = [
        ("nobody-%s@example.org" % new_password()[-6:], user.password),
        (user.three_pids[0]["address"], "wrong-" + user.password),
        ("foreign@example.org", foreign.password),
    ]
    for address, password in cases:
        r = hs.client.login(
            identifier={"type": "m.id.thirdparty", "medium": "email", "address": address}, password=password
        )
        assert r.status_code == 403, (address, r.text)
    assert hs.client.profile(user.user_id).status_code == 404
    checked = [c["user_id"] for c in hs.ma1sd.password_checks()]
    assert "@someone:elsewhere.example" not in checked


def test_first_login_by_an_address_with_url_special_characters(hs: Homeserver) -> None:
    """'+', '&' and '=' are valid in an email's local part: the backend gets
    the address as typed (ma1sd: in the lookup's query string; the REST
    store: in the JSON body)."""
    tag = new_password()[-8:]
    address = "first+login&x=1-%s@example.org" % tag
    user = hs.new_user("plus", emails=(address,))
    r = hs.client.login(
        identifier={"type": "m.id.thirdparty", "medium": "email", "address": address}, password=user.password
    )
    if logged_in_by_3pid(hs, r, user):
        assert hs.ma1sd.lookups()[-1]["address"] == address


@pytest.mark.backend("rest")
def test_store_answering_full_matrix_ids_logs_in_by_email_and_name(hs: Homeserver) -> None:
    """A store may answer ``{"type": "mxid", "value": "@alice:example.org"}``
    for both the lookup and the password check."""
    hs.rest_store.id_type = "mxid"
    user = hs.new_user("mxid", display_name="Mx Id", emails=("mxid-%s@example.org" % new_password()[-8:],))
    r = hs.client.login(
        identifier={"type": "m.id.thirdparty", "medium": "email", "address": user.three_pids[0]["address"]},
        password=user.password,
    )
    if not shim_drops_3pid_auth(hs):
        assert r.status_code == 200, r.text
        assert r.json()["user_id"] == user.user_id
        assert hs.client.displayname(user.user_id) == "Mx Id"
    assert hs.client.login_ok(user.user_id[1:].split(":")[0], user.password)["user_id"] == user.user_id


@pytest.mark.backend("rest")
def test_store_lookup_naming_a_localpart_in_capitals_finds_the_lowercase_user(hs: Homeserver) -> None:
    user = hs.new_user("caps", emails=("caps-%s@example.org" % new_password()[-8:],))
    localpart = user.user_id[1:].split(":")[0]
    hs.rest_store.id_override[user.user_id] = {"type": "localpart", "value": localpart.upper()}
    r = hs.client.login(
        identifier={"type": "m.id.thirdparty", "medium": "email", "address": user.three_pids[0]["address"]},
        password=user.password,
    )
    logged_in_by_3pid(hs, r, user)


@pytest.mark.backend("rest")
def test_store_lookup_naming_a_user_of_another_server_is_refused_without_a_password_check(hs: Homeserver) -> None:
    foreign = hs.ma1sd.add_user(
        "@someone%s:elsewhere.example" % new_password()[-6:],
        new_password(),
        emails=("foreign-%s@example.org" % new_password()[-8:],),
    )
    hs.rest_store.id_type = "mxid"
    mark = hs.mark()
    r = hs.client.login(
        identifier={"type": "m.id.thirdparty", "medium": "email", "address": foreign.three_pids[0]["address"]},
        password=foreign.password,
    )
    assert r.status_code == 403, r.text
    assert hs.ma1sd.password_checks() == []
    if not shim_drops_3pid_auth(hs):
        lines = hs.new_log_lines(mark)
        assert any(
            "Login refused for %s without asking %s" % (foreign.user_id, BACKEND_NAME) in line for line in lines
        ), lines


@pytest.mark.backend("rest")
def test_store_at_full_urls_with_first_login_by_email_turned_off(tmp_path: Path) -> None:
    """``rest.auth`` as a full URL is used as is (not joined to ``endpoint``);
    an empty ``rest.identity.single`` turns first logins by email off."""
    store = FakeRestStore(base_path="/iam/v1").start()
    style = "modules" if supports_modules_style() else "password_providers"
    config = with_backend(
        {
            "endpoint": "http://127.0.0.1:9",  # nothing listens there
            "timeout": TIMEOUT,
            "rest": {"auth": store.url + "/iam/v1/auth/login", "identity": {"single": ""}},
        }
    )
    server = SynapseServer(tmp_path, module_block(style, config), name="fullurls", log_level="DEBUG")
    try:
        server.start()
        check_started(server)
        client = MatrixClient(server.url)
        address = "off-%s@example.org" % new_password()[-8:]
        newcomer = store.add_user("@off%s:example.org" % new_password()[-8:], new_password(), emails=(address,))
        r = client.login(
            identifier={"type": "m.id.thirdparty", "medium": "email", "address": address}, password=newcomer.password
        )
        assert r.status_code == 403, r.text
        assert client.profile(newcomer.user_id).status_code == 404
        assert store.requests == []
        assert client.login_ok(newcomer.user_id, newcomer.password)["user_id"] == newcomer.user_id
        assert [c["user_id"] for c in store.password_checks()] == [newcomer.user_id]
    finally:
        server.stop()
        store.stop()
