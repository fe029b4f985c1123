"""Email and phone login for users Synapse has never seen (check_3pid_auth).

On Synapse 1.46.0-1.47.1 the legacy ``password_providers:`` shim drops
``check_3pid_auth`` (fixed in 1.48.0): there a first login by email through a
legacy-style block is refused, and the test says so.
"""

from typing import List

from tests.fake_ma1sd import CHECK_PATH, LOOKUP_PATH
from tests.integration.conftest import Homeserver, new_password
from tests.integration.harness import synapse_version


def shim_drops_3pid_auth(hs: Homeserver) -> bool:
    """Returns True on 1.46.0-1.47.1 with the legacy style (Synapse bug #11340)."""
    return hs.style == "password_providers" and (1, 46, 0) <= synapse_version() < (1, 48, 0)


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
        assert hs.ma1sd.requests_for(LOOKUP_PATH)[-1]["query"]["medium"] == ["email"]


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
    if shim_drops_3pid_auth(hs):
        assert r.status_code == 403
        return
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] == user.user_id
    assert hs.ma1sd.requests_for(LOOKUP_PATH)[-1]["query"]["address"] == ["353857654%s" % digits]


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
    checked = [c["user_id"] for c in hs.ma1sd.requests_for(CHECK_PATH)]
    assert "@someone:elsewhere.example" not in checked
