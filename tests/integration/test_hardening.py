"""Regression tests for the security review of 1.0.0 (issue 14), through real Synapse.

Each test names the finding it covers. They run in every tox environment, on
``defaults_hs`` / ``sync_hs`` and on ``hardened_hs``: a Synapse with a strict
``rc_login.failed_attempts`` (3, then practically never again) and an
application service owning the exclusive namespace ``@bridge_.*``.
"""

import random
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import yaml

from support.fake_ma1sd import FakeMa1sd
from support.harness import supports_modules_style
from support.matrix_client import logins_at_once
from tests.integration.conftest import BACKEND_NAME, PASSWORDS, TIMEOUT, Homeserver, new_password, start_homeserver
from tests.integration.test_threepid_login import shim_drops_3pid_auth

AS_TOKEN = "as-%s" % uuid.uuid4().hex
HS_TOKEN = "hs-%s" % uuid.uuid4().hex
FAILED_ATTEMPTS_BURST = 3
TOO_MANY_FAILURES = "without asking %s: too many failed attempts" % BACKEND_NAME

# Numbers from the UK range reserved for drama (07700 900000-900999), each
# used once per session: the fake ma1sd's lookup is shared by every server.
# 900123 belongs to test_login.py.
_UK_SUFFIXES = iter(random.sample([n for n in range(1000) if n != 123], 999))


def uk_mobile() -> str:
    """Returns a fresh msisdn (digits, country code first), e.g. 447700900456."""
    return "447700900%03d" % next(_UK_SUFFIXES)


def tag() -> str:
    return uuid.uuid4().hex[:8]


def checks_for(hs: Homeserver, user_id: str) -> int:
    """Returns how many password checks the backend received for ``user_id``."""
    return sum(1 for r in hs.ma1sd.password_checks() if r.get("user_id", "").lower() == user_id.lower())


def thirdparty(medium: str, address: str) -> Dict[str, str]:
    return {"type": "m.id.thirdparty", "medium": medium, "address": address}


def log_size(hs: Homeserver) -> int:
    path = hs.server.log_path
    return path.stat().st_size if path.exists() else 0


def module_lines_since(hs: Homeserver, offset: int) -> List[str]:
    """Returns the module's log lines written after byte ``offset``, split on
    LF only (``splitlines()`` would also split on other control characters)."""
    with open(str(hs.server.log_path), "rb") as f:
        f.seek(offset)
        text = f.read().decode("utf8", errors="replace")
    return [line for line in text.split("\n") if " - rest_auth_provider" in line]


def raw_controls(line: str) -> List[str]:
    return [c for c in line if ord(c) < 0x20 or ord(c) == 0x7F]


@pytest.fixture(scope="module")
def hardened_hs(request: Any, tmp_path_factory: Any, ma1sd: FakeMa1sd) -> Iterator[Homeserver]:
    folder = Path(tmp_path_factory.mktemp("appservice"))
    registration = folder / "bridge.yaml"
    registration.write_text(
        yaml.safe_dump(
            {
                "id": "hardening-bridge",
                "url": None,
                "as_token": AS_TOKEN,
                "hs_token": HS_TOKEN,
                "sender_localpart": "hardeningbot",
                "namespaces": {
                    "users": [{"exclusive": True, "regex": "@bridge_.*:example.org"}],
                    "aliases": [],
                    "rooms": [],
                },
            }
        )
    )
    synapse_config = {
        "rc_login": {
            "address": {"per_second": 1000, "burst_count": 1000},
            "account": {"per_second": 1000, "burst_count": 1000},
            "failed_attempts": {"per_second": 0.0001, "burst_count": FAILED_ATTEMPTS_BURST},
        },
        "app_service_config_files": [str(registration)],
    }
    style = "modules" if supports_modules_style() else "password_providers"
    config = {"endpoint": ma1sd.url, "timeout": TIMEOUT}
    yield from start_homeserver(request, tmp_path_factory, ma1sd, "hardened", style, config, synapse_config)


# -- finding 1: failed-login limit across spellings ---------------------------


def spellings(msisdn: str) -> List[str]:
    """Ways people type the number 44 7700 900xxx."""
    national = msisdn[2:]
    return [
        "+" + msisdn,
        "44 " + national,
        "(44)" + national,
        "-".join(msisdn),
        "+44 %s %s" % (national[:4], national[4:]),
        "0044 %s %s" % (national[:4], national[4:]),
    ]


def test_failed_attempts_count_across_phone_spellings(hardened_hs: Homeserver) -> None:
    """Finding 1: every spelling of one number draws on one failed-attempt budget."""
    hs = hardened_hs
    msisdn = uk_mobile()
    user = hs.new_user("limit", msisdns=("+" + msisdn,))

    statuses = []
    for typed in spellings(msisdn):
        r = hs.client.login(identifier=thirdparty("msisdn", typed), password="wrong-" + user.password)
        statuses.append(r.status_code)
    assert set(statuses) <= {403, 429}, statuses
    assert checks_for(hs, user.user_id) <= FAILED_ATTEMPTS_BURST
    sent = checks_for(hs, user.user_id)

    offset = log_size(hs)
    national = msisdn[2:]
    r = hs.client.login(
        identifier=thirdparty("msisdn", "+44-%s-%s" % (national[:4], national[4:])), password=user.password
    )
    assert r.status_code == 403, r.text
    assert checks_for(hs, user.user_id) == sent
    assert any(TOO_MANY_FAILURES in line for line in module_lines_since(hs, offset))
    assert hs.client.profile(user.user_id).status_code == 404


def test_failed_attempts_by_user_name_also_close_phone_login(hardened_hs: Homeserver) -> None:
    """Finding 1: the budget belongs to the account, whatever identifier was typed."""
    hs = hardened_hs
    msisdn = uk_mobile()
    localpart = "bob%s" % tag()
    user = hs.ma1sd.add_user(hs.user_id(localpart), new_password(), msisdns=("+" + msisdn,))

    for typed in (localpart.capitalize(), localpart, user.user_id):
        assert hs.client.login(typed, "wrong-" + user.password).status_code == 403, typed
    sent = checks_for(hs, user.user_id)
    assert sent <= FAILED_ATTEMPTS_BURST

    offset = log_size(hs)
    national = msisdn[2:]
    r = hs.client.login(
        identifier=thirdparty("msisdn", "+44 %s %s" % (national[:4], national[4:])), password=user.password
    )
    assert r.status_code == 403, r.text
    assert any(TOO_MANY_FAILURES in line for line in module_lines_since(hs, offset))
    r = hs.client.login("@%s:%s" % (localpart.upper(), hs.server_name), user.password)
    assert r.status_code in (403, 429), r.text
    assert checks_for(hs, user.user_id) == sent
    assert hs.client.profile(user.user_id).status_code == 404


# -- finding 2: look-alike addresses from ma1sd --------------------------------


def test_look_alike_addresses_are_not_stored_as_someone_elses(hs: Homeserver) -> None:
    """Finding 2: ſ (U+017F), ß and the Kelvin sign K (U+212A) fold to other
    people's ASCII addresses; ma1sd's list is not proof of those mailboxes."""
    t = tag()
    sam_address = "sam-%s@example.org" % t
    look_alikes = ("\u017fam-%s@example.org" % t, "bo\u00df-%s@example.org" % t, "ada-%s@\u212aexample.org" % t)
    mallory = hs.new_user("mallory", emails=look_alikes + ("mallory-%s@example.org" % t,))
    sam = hs.new_user("sam", emails=(sam_address,))

    mark = hs.mark()
    token = hs.client.login_ok(mallory.user_id, mallory.password)["access_token"]
    assert hs.client.threepid_set(token) == {("email", "mallory-%s@example.org" % t)}
    skipped = [
        w for w in hs.module_warnings(mark) if "Not adding email" in w and "which is not the address as sent" in w
    ]
    assert len(skipped) == len(look_alikes), hs.module_warnings(mark)

    mark = hs.mark()
    token = hs.client.login_ok(sam.user_id, sam.password)["access_token"]
    assert hs.client.threepid_set(token) == {("email", sam_address)}
    assert not any("already belongs to" in w for w in hs.module_warnings(mark)), hs.module_warnings(mark)
    r = hs.client.login(identifier=thirdparty("email", sam_address), password=sam.password)
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] == sam.user_id
    assert hs.ma1sd.password_checks()[-1]["user_id"] == sam.user_id


# -- finding 3: concurrent logins never move an address ------------------------


def test_concurrent_first_logins_give_an_address_to_one_account(defaults_hs: Homeserver) -> None:
    """Finding 3: ten accounts race for one address; one gets it, nine are told."""
    hs = defaults_hs
    for _ in range(3):
        address = "shared-%s@example.org" % tag()
        users = [hs.ma1sd.add_user(hs.user_id("race%s" % tag()), new_password(), emails=(address,)) for _ in range(10)]
        mark = hs.mark()

        responses = logins_at_once([hs.server.url], [(u.user_id, u.password) for u in users])

        assert [r.status_code for r in responses] == [200] * 10, [r.text for r in responses if r.status_code != 200]
        holders = [
            u.user_id
            for u, r in zip(users, responses)
            if ("email", address) in hs.client.threepid_set(r.json()["access_token"])
        ]
        assert len(holders) == 1, holders
        refused = [w for w in hs.module_warnings(mark) if address in w and "already belongs to" in w]
        told = {u.user_id for u in users if any(u.user_id in w for w in refused)} - set(holders)
        assert len(refused) == 9 and len(told) == 9, refused


# -- finding 4: application service namespaces ---------------------------------


def test_appservice_namespace_is_refused_before_asking_ma1sd(hardened_hs: Homeserver) -> None:
    """Finding 4: a directory password never opens an appservice's user, existing or new."""
    hs = hardened_hs
    r = hs.client.register_as_appservice(AS_TOKEN, "bridge_alice")
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] == "@bridge_alice:example.org"
    alice = hs.ma1sd.add_user("@bridge_alice:example.org", new_password())
    newcomer = hs.ma1sd.add_user("@bridge_new:example.org", new_password())

    for user in (alice, newcomer):
        offset = log_size(hs)
        r = hs.client.login(user.user_id[1:].split(":")[0], user.password)
        assert r.status_code == 403, (user.user_id, r.text)
        assert checks_for(hs, user.user_id) == 0
        assert any(
            "without asking %s: the user ID is in an application service's exclusive namespace" % BACKEND_NAME in line
            for line in module_lines_since(hs, offset)
        ), module_lines_since(hs, offset)
    assert hs.client.profile(newcomer.user_id).status_code == 404

    normal = hs.new_user("normal")
    assert hs.client.login_ok(normal.user_id, normal.password)["user_id"] == normal.user_id


# -- finding 6: control characters in logs -------------------------------------


def test_control_characters_never_reach_the_log_raw(hs: Homeserver) -> None:
    """Finding 6: what a client typed and what ma1sd sent is escaped in log lines."""
    offset = log_size(hs)
    address = "x\x1b[31mred-%s\x07\x08@example.org" % tag()
    r = hs.client.login(identifier=thirdparty("email", address), password=new_password())
    assert r.status_code == 403, r.text
    lines = module_lines_since(hs, offset)
    assert [line for line in lines if raw_controls(line)] == []
    if not shim_drops_3pid_auth(hs):
        assert any("\\x1b" in line for line in lines), lines

    t = tag()
    user = hs.new_user("ctl", emails=("esc\x1b[2J-%s@example.org" % t, "ctl-%s@example.org" % t))
    offset = log_size(hs)
    hs.client.login_ok(user.user_id, user.password)
    lines = module_lines_since(hs, offset)
    assert lines and [line for line in lines if raw_controls(line)] == []


# -- finding 7: display names Synapse cannot store -----------------------------


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("Eve \ud800 Smith", "Eve Smith"),
        ("Line1\nLine2", "Line1 Line2"),
        ("\u202eevil", "evil"),
        ("A\x1bB\x00C", "ABC"),
    ],
    ids=["lone surrogate", "newline", "right-to-left override", "ESC and NUL"],
)
def test_display_names_are_cleaned_and_never_fail_the_login(hs: Homeserver, sent: str, stored: str) -> None:
    """Finding 7: the login succeeds and the profile shows printable text."""
    user = hs.new_user("name", display_name=sent)
    hs.client.login_ok(user.user_id, user.password)
    assert hs.client.displayname(user.user_id) == stored


# -- finding 8: phone numbers in any spelling ----------------------------------


def test_a_known_number_logs_in_under_any_spelling(hs: Homeserver) -> None:
    """Finding 8: the number is stored canonically and every spelling finds it."""
    msisdn = uk_mobile()
    national = msisdn[2:]
    user = hs.new_user("tel", msisdns=("+" + msisdn,))
    r = hs.client.login(
        identifier=thirdparty("msisdn", "+44 %s %s" % (national[:4], national[4:])), password=user.password
    )
    if shim_drops_3pid_auth(hs):
        # 1.46.0-1.47.1 with password_providers: never asks the module.
        assert r.status_code == 403
        return
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] == user.user_id
    pids = hs.client.threepids(r.json()["access_token"])
    assert [(p["medium"], p["address"]) for p in pids] == [("msisdn", msisdn)]
    national_0 = "0" + national
    later = [
        thirdparty("msisdn", "+44 %s %s" % (national[:4], national[4:])),
        thirdparty("msisdn", "0044 %s %s" % (national[:4], national[4:])),
        thirdparty("msisdn", "+44 (0) %s %s" % (national[:4], national[4:])),
        {"type": "m.id.phone", "country": "GB", "phone": "%s %s" % (national_0[:5], national_0[5:])},
    ]
    for identifier in later:
        if identifier["type"] == "m.id.phone":
            identifier["number"] = identifier["phone"]  # what older Synapse reads
        r = hs.client.login(identifier=identifier, password=user.password)
        assert r.status_code == 200, (identifier, r.text)
        assert r.json()["user_id"] == user.user_id


def test_national_prefix_in_brackets_is_not_stored(hs: Homeserver) -> None:
    """Finding 8: ``+44 (0) 7700 900xxx`` is 447700900xxx, not 4407700900xxx."""
    msisdn = uk_mobile()
    national = msisdn[2:]
    user = hs.new_user("tel0", msisdns=("+44 (0) %s %s" % (national[:4], national[4:]),))
    token = hs.client.login_ok(user.user_id, user.password)["access_token"]
    assert hs.client.threepid_set(token) == {("msisdn", msisdn)}


# -- finding 11: reactivated accounts get their 3PIDs back at once --------------


def admin_token(hs: Homeserver) -> str:
    body = hs.client.register_admin(hs.shared_secret(), "admin%s" % tag(), new_password())
    return str(body["access_token"])


def test_reactivated_account_gets_its_3pids_back_at_once(defaults_hs: Homeserver) -> None:
    """Finding 11: deactivation drops the 3PIDs; the first login after
    reactivation restores them, although the module remembered them in step."""
    hs = defaults_hs
    address = "back-%s@example.org" % tag()
    user = hs.new_user("react", emails=(address,))
    token = hs.client.login_ok(user.user_id, user.password)["access_token"]
    assert hs.client.threepid_set(token) == {("email", address)}
    hs.client.login_ok(user.user_id, user.password)  # now remembered in step

    # Reactivation needs Synapse's own background updates done (1.76+ answers
    # 500 until profiles_full_user_id_key_idx is built), as they long are in production.
    hs.server.wait_for_background_updates()
    admin = admin_token(hs)
    hs.client.deactivate(admin, user.user_id)
    # A local password is what every release needs to reactivate; it is not
    # one of PASSWORDS: old releases log admin request bodies at DEBUG.
    hs.client.reactivate(admin, user.user_id, "local-%s" % uuid.uuid4().hex)

    token = hs.client.login_ok(user.user_id, user.password)["access_token"]
    assert hs.client.threepid_set(token) == {("email", address)}


# -- finding 12: password size cap -----------------------------------------------


def long_password(size: int) -> str:
    """Returns a password of exactly ``size`` bytes of UTF-8 (two-byte characters)."""
    head = new_password()
    pad = size - len(head.encode())
    password = head + "\u00e9" * (pad // 2) + "x" * (pad % 2)
    assert len(password.encode()) == size
    PASSWORDS.append(password)
    return password


def test_passwords_over_1024_bytes_are_refused_without_asking_ma1sd(hs: Homeserver) -> None:
    """Finding 12: the cap is 1024 bytes of UTF-8, inclusive."""
    too_long = hs.new_user("big")
    too_long.password = long_password(1025)
    offset = log_size(hs)
    assert hs.client.login(too_long.user_id, too_long.password).status_code == 403
    assert checks_for(hs, too_long.user_id) == 0
    assert any("password longer than 1024 bytes" in line for line in module_lines_since(hs, offset))
    assert hs.client.profile(too_long.user_id).status_code == 404

    at_cap = hs.new_user("cap")
    at_cap.password = long_password(1024)
    assert hs.client.login_ok(at_cap.user_id, at_cap.password)["user_id"] == at_cap.user_id
