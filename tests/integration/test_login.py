"""Password logins through a real Synapse, as a client sees them."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from support.fake_ma1sd import Fault
from support.matrix_client import MatrixClient
from tests.integration.conftest import BACKEND_NAME, TIMEOUT, Homeserver, new_password


def test_first_login_registers_lowercased_user_with_profile(hs: Homeserver) -> None:
    user = hs.new_user(
        "alice",
        display_name="Alice Liddell",
        emails=("Alice.Liddell@Example.ORG",),
        msisdns=("+44 7700 900123",),
    )
    localpart = user.user_id[1:].split(":")[0]
    typed = localpart.capitalize()

    body = hs.client.login_ok(typed, user.password)

    assert body["user_id"] == user.user_id
    assert hs.client.whoami(body["access_token"]) == user.user_id
    assert hs.client.displayname(user.user_id) == "Alice Liddell"
    assert hs.client.threepid_set(body["access_token"]) == {
        ("email", "alice.liddell@example.org"),
        ("msisdn", "447700900123"),
    }
    checks = hs.ma1sd.password_checks()
    assert [c["user_id"] for c in checks] == [user.user_id]


def test_localpart_full_id_and_other_case_reach_the_same_account(hs: Homeserver) -> None:
    user = hs.new_user("bob", display_name="Bob")
    localpart = user.user_id[1:].split(":")[0]
    first = hs.client.login_ok(localpart, user.password)["user_id"]
    for typed in (user.user_id, "@%s:%s" % (localpart.upper(), hs.server_name), localpart.upper()):
        assert hs.client.login_ok(typed, user.password)["user_id"] == first == user.user_id


def test_wrong_password_is_403_and_creates_no_account(hs: Homeserver) -> None:
    user = hs.new_user("carol", display_name="Carol")
    mark = hs.mark()

    r = hs.client.login(user.user_id, "not-" + user.password)

    assert r.status_code == 403
    assert r.json()["errcode"] == "M_FORBIDDEN"
    assert hs.client.profile(user.user_id).status_code == 404
    assert len(hs.ma1sd.password_checks()) == 1
    assert any("%s rejected the credentials" % BACKEND_NAME in line for line in hs.new_log_lines(mark))
    assert hs.module_warnings(mark) == []


def test_user_unknown_to_ma1sd_is_403(hs: Homeserver) -> None:
    """ma1sd answers ``success: false``; a REST store answers 404 with such a
    body: both are refused credentials (INFO), not a backend error."""
    mark = hs.mark()
    r = hs.client.login("nobody-here", new_password())
    assert r.status_code == 403
    assert hs.client.profile(hs.user_id("nobody-here")).status_code == 404
    expected = "Login refused for %s: %s rejected the credentials" % (hs.user_id("nobody-here"), BACKEND_NAME)
    assert any(expected in line for line in hs.new_log_lines(mark)), hs.new_log_lines(mark)
    assert hs.module_warnings(mark) == []


@pytest.mark.backend("rest")
def test_store_id_in_capitals_names_the_same_user(hs: Homeserver) -> None:
    """The store's ``id`` is compared case-insensitively with the user logging in."""
    user = hs.new_user("upper", display_name="Upper")
    localpart = user.user_id[1:].split(":")[0]
    hs.rest_store.id_override[user.user_id] = {"type": "localpart", "value": localpart.upper()}
    assert hs.client.login_ok(localpart, user.password)["user_id"] == user.user_id
    hs.rest_store.id_override[user.user_id] = {"type": "mxid", "value": user.user_id.upper()}
    assert hs.client.login_ok(localpart, user.password)["user_id"] == user.user_id
    assert hs.client.displayname(user.user_id) == "Upper"


def test_other_server_and_malformed_ids_are_refused_without_asking_ma1sd(hs: Homeserver) -> None:
    user = hs.new_user("dave")
    localpart = user.user_id[1:].split(":")[0]
    for typed in ("@%s:elsewhere.example" % localpart, "%s:%s" % (localpart, hs.server_name), "bad name", "ünïcode"):
        r = hs.client.login(typed, user.password)
        assert 400 <= r.status_code < 500, (typed, r.status_code, r.text)
    assert hs.ma1sd.password_checks() == []


def test_backend_that_hangs_is_403_within_the_timeout_while_synapse_answers(hs: Homeserver) -> None:
    user = hs.new_user("erin")
    hs.ma1sd.fault = Fault("hang")
    mark = hs.mark()

    status, elapsed, probes = hs.login_while_probing(user.user_id, user.password, interval=0.1)

    assert status == 403
    assert elapsed <= TIMEOUT + 1.0
    # A reactor blocked by the hanging call would hold a probe for the whole
    # 3 s; half of that leaves room for a loaded CI machine's hiccups.
    assert len(probes) >= 10 and max(probes) < TIMEOUT / 2, probes
    assert hs.client.profile(user.user_id).status_code == 404
    warnings = hs.module_warnings(mark)
    assert len(warnings) == 1 and "no complete answer within 3 s" in warnings[0], warnings


def test_backend_down_is_403_with_one_warning(hs: Homeserver) -> None:
    user = hs.new_user("frank")
    hs.ma1sd.stop()
    mark = hs.mark()
    started = time.monotonic()
    r = hs.client.login(user.user_id, user.password)
    assert r.status_code == 403
    assert time.monotonic() - started < TIMEOUT
    warnings = hs.module_warnings(mark)
    assert len(warnings) == 1 and "connection refused" in warnings[0], warnings


def test_garbage_replies_are_403_with_a_warning_naming_the_cause(hs: Homeserver) -> None:
    user = hs.new_user("gina")
    cases = [
        (Fault("body", body=b"<html>Bad Gateway</html>"), "reply is not JSON"),
        (Fault("body", body=b'{"auth": {"success": "true"}}'), "'auth.success' is a string"),
        (Fault("body", body=b"[1, 2]"), "reply is a list"),
        (Fault("status", status=500, body=b'{"errcode": "M_UNKNOWN"}'), "HTTP 500"),
        (Fault("redirect", status=302), "redirect"),
    ]
    for fault, cause in cases:
        hs.ma1sd.fault = fault
        mark = hs.mark()
        r = hs.client.login(user.user_id, user.password)
        assert r.status_code == 403, (fault, r.text)
        warnings = hs.module_warnings(mark)
        assert len(warnings) == 1 and cause in warnings[0], (cause, warnings)
    assert hs.client.profile(user.user_id).status_code == 404


def test_email_identifier_works_after_the_first_login(hs: Homeserver) -> None:
    user = hs.new_user("hana", emails=("hana.b@example.org",))
    hs.client.login_ok(user.user_id, user.password)
    r = hs.client.login(
        identifier={"type": "m.id.thirdparty", "medium": "email", "address": "Hana.B@Example.org"},
        password=user.password,
    )
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] == user.user_id


def test_simultaneous_first_logins_make_one_account(hs: Homeserver) -> None:
    user = hs.new_user("ivan", display_name="Ivan", emails=("ivan@example.org",))
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda _: MatrixClient(hs.server.url).login(user.user_id, user.password), range(20)))
    assert [r.status_code for r in responses] == [200] * 20, [r.text for r in responses if r.status_code != 200]
    assert {r.json()["user_id"] for r in responses} == {user.user_id}
    token = responses[0].json()["access_token"]
    assert hs.client.threepid_set(token) == {("email", "ivan@example.org")}
    assert hs.client.displayname(user.user_id) == "Ivan"


def test_threepid_of_another_user_is_never_moved(hs: Homeserver) -> None:
    owner = hs.new_user("jane", emails=("shared@example.org",))
    other = hs.new_user("jack", emails=("shared@example.org", "jack@example.org"))
    owner_token = hs.client.login_ok(owner.user_id, owner.password)["access_token"]
    mark = hs.mark()
    other_token = hs.client.login_ok(other.user_id, other.password)["access_token"]
    assert hs.client.threepid_set(owner_token) == {("email", "shared@example.org")}
    assert hs.client.threepid_set(other_token) == {("email", "jack@example.org")}
    assert any("already belongs to %s" % owner.user_id in w for w in hs.module_warnings(mark))


def test_unsupported_media_are_ignored(hs: Homeserver) -> None:
    user = hs.new_user("kim", extra_three_pids=({"medium": "kmx.employee.id", "address": "12345"},))
    token = hs.client.login_ok(user.user_id, user.password)["access_token"]
    assert hs.client.threepid_set(token) == set()


def test_deactivated_account_is_refused_and_left_alone(hs: Homeserver) -> None:
    user = hs.new_user("leo", display_name="Leo")
    hs.client.login_ok(user.user_id, user.password)
    admin = hs.client.register_admin(hs.shared_secret(), "admin%s" % user.user_id[4:].split(":")[0], new_password())
    hs.client.deactivate(admin["access_token"], user.user_id)
    user.display_name = "Leo Renamed"
    hs.ma1sd.reset()

    r = hs.client.login(user.user_id, user.password)

    assert r.status_code == 403
    assert hs.ma1sd.password_checks() == []


def test_startup_log_names_the_compatibility_branches(hs: Homeserver) -> None:
    """Each branch of the compatibility layer runs somewhere in the tox matrix;
    the start-up log line says which one this Synapse uses."""
    from support.harness import synapse_version

    version = synapse_version()
    lines = [line for line in hs.server.log_lines() if "rest_auth_provider uses:" in line]
    assert len(lines) == 1, lines
    line = lines[0]
    expected = {
        "display name via ModuleApi.set_displayname": version >= (1, 76),
        "display name via ProfileHandler.set_displayname": version < (1, 76),
        "profile read via ModuleApi.get_profile_for_user": version >= (1, 39),
        "profile read via store.get_profile_displayname": version < (1, 39),
        "3PID read via ModuleApi.get_threepids_for_user": version >= (1, 39),
        "3PID read via store.user_get_threepids": version < (1, 39),
        "server name via ModuleApi.server_name": version >= (1, 53),
        "server name via hs.hostname": version < (1, 53),
        "process kind via ModuleApi.worker_app": version >= (1, 53),
        "process kind via config.worker.worker_app": version < (1, 53),
        "account lookup via ModuleApi.get_userinfo_by_id, then ModuleApi.check_user_exists": version >= (1, 41),
        "account lookup via ModuleApi.check_user_exists": version < (1, 41),
        "deactivation check via ModuleApi.get_userinfo_by_id": version >= (1, 41),
        "deactivation check via store.get_user_deactivated_status": version < (1, 41),
        "3PID removal via AuthHandler.delete_local_threepid": version >= (1, 79),
        "3PID removal via store.user_delete_threepid": version < (1, 79),
        "deactivation notice via on_user_deactivation_status_changed and ModuleApi.invalidate_cache": version
        >= (1, 69),
        "deactivation notice via none (profile_recheck_interval off)": version < (1, 69),
        "failed-attempt limit via rc_login.failed_attempts": True,
        "appservice namespaces via store.get_app_services": True,
    }
    for fragment, present in expected.items():
        assert (fragment in line) == present, (fragment, line)
    assert ("loaded from '%s:'" % hs.style) in hs.server.log_text()
