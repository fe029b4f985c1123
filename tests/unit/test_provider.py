"""The provider's logic against a strict ModuleApi mock and a real (fake) ma1sd."""

import inspect
import logging
from typing import Any, Callable, Dict, Optional, Tuple
from unittest.mock import Mock

import pytest
from prometheus_client import REGISTRY
from synapse.module_api import ModuleApi
from twisted.internet import defer

from rest_auth_provider import RestAuthProvider, metrics
from support.fake_ma1sd import CHECK_PATH, LOOKUP_PATH, FakeMa1sd, Fault
from support.fake_reststore import FakeRestStore
from support.twisted_helpers import ensure_deferred
from tests.unit.conftest import Serve
from tests.unit.fake_synapse import FakeSynapse

try:  # Synapse >= 1.35 exports it for modules.
    from synapse.module_api.errors import ConfigError
except ImportError:  # Synapse 1.19
    from synapse.config._base import ConfigError

PW = "correct horse battery staple"
HAS_CALLBACKS = hasattr(ModuleApi, "register_password_auth_provider_callbacks")
# Synapse 1.69+: every process hears of deactivations, so the profile memory is on.
HAS_DEACTIVATION_NOTICE = hasattr(ModuleApi, "invalidate_cache") and "on_user_deactivation_status_changed" in (
    inspect.signature(ModuleApi.register_third_party_rules_callbacks).parameters
    if hasattr(ModuleApi, "register_third_party_rules_callbacks")
    else {}
)


@pytest.fixture
def ma1sd(serve: Serve) -> FakeMa1sd:
    return serve(FakeMa1sd())


@pytest.fixture
def synapse() -> FakeSynapse:
    return FakeSynapse()


def make_provider(synapse: FakeSynapse, ma1sd: FakeMa1sd, **config: Any) -> RestAuthProvider:
    raw = {"endpoint": ma1sd.url, "timeout": 1}
    raw.update(config)
    parsed = RestAuthProvider.parse_config(raw)
    return RestAuthProvider(config=parsed, account_handler=synapse.api)


def test_check_password_is_not_defined() -> None:
    # Synapse would log users in under the ID exactly as typed.
    assert not hasattr(RestAuthProvider, "check_password")


if HAS_CALLBACKS:  # Synapse 1.46+; older releases only have password_providers.

    @ensure_deferred
    async def test_modules_style_registers_a_checker_that_returns_a_2_tuple(
        synapse: FakeSynapse, ma1sd: FakeMa1sd
    ) -> None:
        ma1sd.add_user("@alice:example.org", PW, "Alice")
        RestAuthProvider(RestAuthProvider.parse_config({"endpoint": ma1sd.url}), synapse.api)

        kwargs = synapse.api.register_password_auth_provider_callbacks.call_args[1]
        checker = kwargs["auth_checkers"][("m.login.password", ("password",))]
        assert "check_3pid_auth" in kwargs
        assert await checker("Alice", "m.login.password", {"password": PW}) == ("@alice:example.org", None)
        assert await checker("Alice", "m.login.password", {"password": "wrong"}) is None


def test_modules_style_on_synapse_older_than_1_46_is_a_clear_config_error(ma1sd: FakeMa1sd) -> None:
    old_api = Mock(spec=["check_user_exists", "register_user", "get_qualified_user_id", "_hs"])
    old_api._hs = Mock(hostname="example.org")
    with pytest.raises(ConfigError) as info:
        RestAuthProvider(RestAuthProvider.parse_config({"endpoint": ma1sd.url}), api=old_api)
    assert "password_providers" in str(getattr(info.value, "msg", info.value))


def test_legacy_style_registers_no_callbacks(synapse: FakeSynapse, ma1sd: FakeMa1sd) -> None:
    provider = make_provider(synapse, ma1sd)
    if HAS_CALLBACKS:
        synapse.api.register_password_auth_provider_callbacks.assert_not_called()
    assert provider.get_supported_login_types() == {"m.login.password": ("password",)}


@ensure_deferred
async def test_first_login_registers_lowercase_with_profile(synapse: FakeSynapse, ma1sd: FakeMa1sd) -> None:
    ma1sd.add_user("@alice:example.org", PW, "Alice A", emails=("Alice@Example.ORG",), msisdns=("+44 7700 900123",))
    provider = make_provider(synapse, ma1sd)

    assert await provider.check_auth("Alice", "m.login.password", {"password": PW}) == "@alice:example.org"

    account = synapse.accounts["@alice:example.org"]
    assert synapse.registrations == ["@alice:example.org"]
    assert account.displayname == "Alice A"
    assert account.threepids == {("email", "alice@example.org"), ("msisdn", "447700900123")}
    assert [r["user_id"] for r in ma1sd.requests_for(CHECK_PATH)] == ["@alice:example.org"]


@ensure_deferred
async def test_existing_user_logs_in_under_the_stored_id(synapse: FakeSynapse, ma1sd: FakeMa1sd) -> None:
    synapse.add_account("@Historic:example.org", "H")
    ma1sd.add_user("@historic:example.org", PW)
    provider = make_provider(synapse, ma1sd)
    assert await provider.check_auth("historic", "m.login.password", {"password": PW}) == "@Historic:example.org"
    assert synapse.registrations == []
    assert ma1sd.requests_for(CHECK_PATH)[0]["user_id"] == "@Historic:example.org"


@ensure_deferred
async def test_an_exact_id_is_found_without_the_case_insensitive_lookup(synapse: FakeSynapse, ma1sd: FakeMa1sd) -> None:
    synapse.add_account("@exact:example.org", "E")
    ma1sd.add_user("@exact:example.org", PW)
    provider = make_provider(synapse, ma1sd)
    assert await provider.check_auth("Exact", "m.login.password", {"password": PW}) == "@exact:example.org"
    # Since 1.41 an exact match comes from Synapse's cached get_userinfo_by_id;
    # before that, check_user_exists (a database query) is the only way.
    expected_lookups = 0 if hasattr(ModuleApi, "get_userinfo_by_id") else 1
    assert synapse.api.check_user_exists.call_count == expected_lookups


@ensure_deferred
async def test_a_deactivated_account_found_case_insensitively_is_refused(
    synapse: FakeSynapse, ma1sd: FakeMa1sd
) -> None:
    synapse.add_account("@Gone:example.org", "G").deactivated = True
    ma1sd.add_user("@gone:example.org", PW)
    provider = make_provider(synapse, ma1sd)
    assert await provider.check_auth("gone", "m.login.password", {"password": PW}) is None
    assert ma1sd.requests == []
    assert synapse.registrations == []


@ensure_deferred
async def test_wrong_password_creates_nothing(synapse: FakeSynapse, ma1sd: FakeMa1sd) -> None:
    ma1sd.add_user("@bob:example.org", PW)
    provider = make_provider(synapse, ma1sd)
    assert await provider.check_auth("bob", "m.login.password", {"password": "nope"}) is None
    assert synapse.accounts == {}


@ensure_deferred
async def test_refused_locally_without_asking_ma1sd(synapse: FakeSynapse, ma1sd: FakeMa1sd) -> None:
    provider = make_provider(synapse, ma1sd)
    for username, password in [
        ("@bob:other.example", PW),
        ("bob:example.org", PW),
        ("bob", ""),
        ("bob", None),
        ("b\u00f6b", PW),
        ("_reserved", PW),
        (None, PW),
    ]:
        assert await provider.check_auth(username, "m.login.password", {"password": password}) is None  # type: ignore[arg-type]
    assert ma1sd.requests == []


@ensure_deferred
async def test_backend_failure_is_none_and_one_warning(
    synapse: FakeSynapse, ma1sd: FakeMa1sd, caplog: pytest.LogCaptureFixture
) -> None:
    ma1sd.fault = Fault("body", body=b'{"auth": {"success": 1}}')
    provider = make_provider(synapse, ma1sd)
    caplog.set_level(logging.DEBUG)
    assert await provider.check_auth("carol", "m.login.password", {"password": PW}) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "@carol:example.org" in warnings[0].getMessage() and "auth.success" in warnings[0].getMessage()
    assert synapse.accounts == {}
    assert all(PW not in r.getMessage() for r in caplog.records)


@ensure_deferred
async def test_deactivated_account_is_refused_before_asking_ma1sd(synapse: FakeSynapse, ma1sd: FakeMa1sd) -> None:
    synapse.add_account("@dan:example.org", "Dan").deactivated = True
    ma1sd.add_user("@dan:example.org", PW, "Dan New")
    provider = make_provider(synapse, ma1sd, policy={"login": {"profile": {"name": True}}})
    assert await provider.check_auth("dan", "m.login.password", {"password": PW}) is None
    assert ma1sd.requests == []
    assert synapse.accounts["@dan:example.org"].displayname == "Dan"


@ensure_deferred
async def test_unexpected_exception_never_escapes(
    synapse: FakeSynapse, ma1sd: FakeMa1sd, caplog: pytest.LogCaptureFixture
) -> None:
    synapse.api.check_user_exists.side_effect = RuntimeError("database on fire")
    provider = make_provider(synapse, ma1sd)
    assert await provider.check_auth("erin", "m.login.password", {"password": PW}) is None
    assert any(r.levelno == logging.ERROR for r in caplog.records)


@ensure_deferred
async def test_losing_the_registration_race_logs_in_the_existing_account(
    synapse: FakeSynapse, ma1sd: FakeMa1sd
) -> None:
    ma1sd.add_user("@fay:example.org", PW, "Fay")
    synapse.lose_registration_race = True
    provider = make_provider(synapse, ma1sd)
    assert await provider.check_auth("fay", "m.login.password", {"password": PW}) == "@fay:example.org"
    assert synapse.registrations == []


@ensure_deferred
async def test_login_profile_policy_updates_name_only_when_changed(synapse: FakeSynapse, ma1sd: FakeMa1sd) -> None:
    synapse.add_account("@gus:example.org", "Old")
    user = ma1sd.add_user("@gus:example.org", PW, "New")
    provider = make_provider(synapse, ma1sd, policy={"login": {"profile": {"name": True}}})
    await provider.check_auth("gus", "m.login.password", {"password": PW})
    assert synapse.accounts["@gus:example.org"].displayname == "New"
    user.display_name = None
    await provider.check_auth("gus", "m.login.password", {"password": PW})
    assert synapse.accounts["@gus:example.org"].displayname == "New"


@ensure_deferred
async def test_replace_removes_only_with_an_explicit_list(synapse: FakeSynapse, ma1sd: FakeMa1sd) -> None:
    account = synapse.add_account("@hal:example.org", "Hal")
    account.threepids = {("email", "old@example.org"), ("email", "keep@example.org")}
    user = ma1sd.add_user("@hal:example.org", PW, "Hal", emails=("keep@example.org",))
    provider = make_provider(synapse, ma1sd, policy={"all": {"threepid": {"replace": True}}})
    await provider.check_auth("hal", "m.login.password", {"password": PW})
    assert account.threepids == {("email", "keep@example.org")}

    # A reply without a three_pids list removes nothing.
    user.three_pids = []
    ma1sd.fault = Fault("body", body=b'{"auth": {"success": true, "profile": {"display_name": "Hal"}}}')
    await provider.check_auth("hal", "m.login.password", {"password": PW})
    assert account.threepids == {("email", "keep@example.org")}


@ensure_deferred
async def test_threepid_owned_by_someone_else_is_not_moved(synapse: FakeSynapse, ma1sd: FakeMa1sd) -> None:
    synapse.add_account("@owner:example.org").threepids = {("email", "shared@example.org")}
    ma1sd.add_user("@ivy:example.org", PW, emails=("Shared@example.org",))
    provider = make_provider(synapse, ma1sd)
    await provider.check_auth("ivy", "m.login.password", {"password": PW})
    assert synapse.accounts["@ivy:example.org"].threepids == set()
    assert synapse.accounts["@owner:example.org"].threepids == {("email", "shared@example.org")}


def skipped_reads(kind: str) -> float:
    """Returns rest_auth_provider_profile_reads_skipped_total{kind} so far."""
    value = REGISTRY.get_sample_value("rest_auth_provider_profile_reads_skipped_total", {"kind": kind})
    assert value is not None, "metric not registered"
    return value


@ensure_deferred
async def test_first_login_adds_3pids_without_reading_the_new_account(synapse: FakeSynapse, ma1sd: FakeMa1sd) -> None:
    ma1sd.add_user("@kim:example.org", PW, "Kim", emails=("kim@example.org",))
    provider = make_provider(synapse, ma1sd)
    assert await provider.check_auth("kim", "m.login.password", {"password": PW}) == "@kim:example.org"
    assert synapse.accounts["@kim:example.org"].threepids == {("email", "kim@example.org")}
    assert synapse.threepid_reads() == 0


@ensure_deferred
async def test_repeat_logins_skip_the_3pid_read_while_ma1sd_answers_the_same(
    synapse: FakeSynapse, ma1sd: FakeMa1sd
) -> None:
    account = synapse.add_account("@lea:example.org", "Lea")
    user = ma1sd.add_user("@lea:example.org", PW, "Lea", emails=("lea@example.org",))
    provider = make_provider(synapse, ma1sd)
    skipped = skipped_reads("threepids")
    for _ in range(3):
        assert await provider.check_auth("lea", "m.login.password", {"password": PW}) == "@lea:example.org"
    assert account.threepids == {("email", "lea@example.org")}
    if not HAS_DEACTIVATION_NOTICE:
        # Nothing is remembered where a deactivation elsewhere would go unheard.
        assert synapse.threepid_reads() == 3
        assert skipped_reads("threepids") == skipped
        return
    assert synapse.threepid_reads() == 1
    assert skipped_reads("threepids") - skipped == 2

    # A new answer from ma1sd is applied at once.
    user.three_pids = [
        {"medium": "email", "address": "lea@example.org"},
        {"medium": "msisdn", "address": "353851234567"},
    ]
    await provider.check_auth("lea", "m.login.password", {"password": PW})
    assert account.threepids == {("email", "lea@example.org"), ("msisdn", "353851234567")}
    assert synapse.threepid_reads() == 2

    # A 3PID removed inside Synapse comes back once the interval is over,
    # not before (the memory is per process and time-bound).
    account.threepids.discard(("email", "lea@example.org"))
    await provider.check_auth("lea", "m.login.password", {"password": PW})
    assert account.threepids == {("msisdn", "353851234567")}


@ensure_deferred
async def test_recheck_interval_zero_reads_at_every_login(synapse: FakeSynapse, ma1sd: FakeMa1sd) -> None:
    account = synapse.add_account("@max:example.org", "Max")
    ma1sd.add_user("@max:example.org", PW, "Max", emails=("max@example.org",))
    provider = make_provider(synapse, ma1sd, profile_recheck_interval=0, policy={"login": {"profile": {"name": True}}})
    await provider.check_auth("max", "m.login.password", {"password": PW})
    account.threepids.clear()
    account.displayname = "changed in Synapse"
    await provider.check_auth("max", "m.login.password", {"password": PW})
    assert account.threepids == {("email", "max@example.org")}
    assert account.displayname == "Max"
    assert synapse.threepid_reads() == 2
    assert synapse.displayname_reads() == 2


@ensure_deferred
async def test_a_reactivated_account_gets_its_3pids_back_at_once(synapse: FakeSynapse, ma1sd: FakeMa1sd) -> None:
    account = synapse.add_account("@pat:example.org", "Pat")
    ma1sd.add_user("@pat:example.org", PW, "Pat", emails=("pat@example.org",))
    provider = make_provider(synapse, ma1sd)
    await provider.check_auth("pat", "m.login.password", {"password": PW})
    assert account.threepids == {("email", "pat@example.org")}
    # An admin deactivates the account (Synapse drops its 3PIDs) ...
    account.deactivated = True
    account.threepids.clear()
    assert await provider.check_auth("pat", "m.login.password", {"password": PW}) is None
    # ... and reactivates it within profile_recheck_interval.
    account.deactivated = False
    assert await provider.check_auth("pat", "m.login.password", {"password": PW}) == "@pat:example.org"
    assert account.threepids == {("email", "pat@example.org")}


@ensure_deferred
async def test_login_profile_policy_skips_the_name_read_while_in_step(synapse: FakeSynapse, ma1sd: FakeMa1sd) -> None:
    account = synapse.add_account("@ned:example.org", "Old")
    user = ma1sd.add_user("@ned:example.org", PW, "Ned")
    provider = make_provider(synapse, ma1sd, policy={"login": {"profile": {"name": True}}})
    skipped = skipped_reads("displayname")
    await provider.check_auth("ned", "m.login.password", {"password": PW})
    await provider.check_auth("ned", "m.login.password", {"password": PW})
    assert account.displayname == "Ned"
    if not HAS_DEACTIVATION_NOTICE:
        assert synapse.displayname_reads() == 2
        assert skipped_reads("displayname") == skipped
        return
    assert synapse.displayname_reads() == 1
    assert skipped_reads("displayname") - skipped == 1
    user.display_name = "Ned Flanders"
    await provider.check_auth("ned", "m.login.password", {"password": PW})
    assert account.displayname == "Ned Flanders"
    assert synapse.displayname_reads() == 2


@ensure_deferred
async def test_a_3pid_held_by_another_account_warns_at_every_login(
    synapse: FakeSynapse, ma1sd: FakeMa1sd, caplog: pytest.LogCaptureFixture
) -> None:
    synapse.add_account("@owner:example.org").threepids = {("email", "shared@example.org")}
    synapse.add_account("@ora:example.org", "Ora")
    ma1sd.add_user("@ora:example.org", PW, emails=("shared@example.org",))
    provider = make_provider(synapse, ma1sd)
    with caplog.at_level(logging.WARNING, logger="rest_auth_provider"):
        await provider.check_auth("ora", "m.login.password", {"password": PW})
        await provider.check_auth("ora", "m.login.password", {"password": PW})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        warnings
        == ["Not adding email shared@example.org to @ora:example.org: it already belongs to @owner:example.org"] * 2
    )
    assert synapse.threepid_reads() == 2


@ensure_deferred
async def test_threepid_login_for_an_address_synapse_does_not_know(synapse: FakeSynapse, ma1sd: FakeMa1sd) -> None:
    ma1sd.add_user("@jo:example.org", PW, "Jo", emails=("jo@example.org",), msisdns=("+353851234567",))
    provider = make_provider(synapse, ma1sd)
    assert await provider.check_3pid_auth("email", "Jo@Example.org", PW) == "@jo:example.org"
    assert ma1sd.requests_for(LOOKUP_PATH)[0]["query"]["address"] == ["jo@example.org"]
    assert synapse.accounts["@jo:example.org"].displayname == "Jo"
    # Now known locally as sent: Synapse looks it up itself after asking the
    # module and calls check_auth for the owner; the module steps aside, so
    # that a password is checked once per login.
    ma1sd.reset()
    assert await provider.check_3pid_auth("email", "jo@example.org", PW) is None
    assert ma1sd.requests == []


@ensure_deferred
async def test_threepid_login_by_phone_normalises_the_number(synapse: FakeSynapse, ma1sd: FakeMa1sd) -> None:
    ma1sd.add_user("@kai:example.org", PW, msisdns=("+353 85 123 4567",))
    provider = make_provider(synapse, ma1sd)
    assert await provider.check_3pid_auth("msisdn", "+353 85 123 4567", PW) == "@kai:example.org"
    assert ma1sd.requests_for(LOOKUP_PATH)[0]["query"]["address"] == ["353851234567"]


@ensure_deferred
async def test_threepid_login_refuses_foreign_ids_and_unknown_addresses(synapse: FakeSynapse, ma1sd: FakeMa1sd) -> None:
    ma1sd.add_user("@lu:elsewhere.example", PW, emails=("lu@example.org",))
    provider = make_provider(synapse, ma1sd)
    assert await provider.check_3pid_auth("email", "lu@example.org", PW) is None
    assert await provider.check_3pid_auth("email", "nobody@example.org", PW) is None
    assert ma1sd.requests_for(CHECK_PATH) == []
    assert synapse.accounts == {}


@ensure_deferred
async def test_threepid_login_can_be_turned_off(synapse: FakeSynapse, ma1sd: FakeMa1sd) -> None:
    ma1sd.add_user("@mo:example.org", PW, emails=("mo@example.org",))
    provider = make_provider(synapse, ma1sd, threepid_login={"enabled": False})
    assert await provider.check_3pid_auth("email", "mo@example.org", PW) is None
    assert ma1sd.requests == []


# -- issue 14: hardening ------------------------------------------------------


@ensure_deferred
async def test_a_reactivation_nobody_logged_in_through_is_heard(synapse: FakeSynapse, ma1sd: FakeMa1sd) -> None:
    """Deactivated and reactivated by an admin with no login in between: the
    notice Synapse sends every process makes the next login read again."""
    account = synapse.add_account("@ria:example.org", "Ria")
    ma1sd.add_user("@ria:example.org", PW, "Ria", emails=("ria@example.org",))
    provider = make_provider(synapse, ma1sd)
    await provider.check_auth("ria", "m.login.password", {"password": PW})
    await provider.check_auth("ria", "m.login.password", {"password": PW})
    account.threepids.clear()  # what Synapse does on deactivation
    callback = synapse.deactivation_callback()
    if HAS_DEACTIVATION_NOTICE:
        assert callback is not None
        await callback("@ria:example.org", True, True)
        await callback("@ria:example.org", False, True)
    else:
        assert callback is None
    assert await provider.check_auth("ria", "m.login.password", {"password": PW}) == "@ria:example.org"
    assert account.threepids == {("email", "ria@example.org")}


@ensure_deferred
async def test_failed_attempts_count_per_account_whatever_the_spelling(
    synapse: FakeSynapse, ma1sd: FakeMa1sd, caplog: pytest.LogCaptureFixture
) -> None:
    synapse.set_failed_attempts(0.0001, 3)
    ma1sd.add_user("@tom:example.org", PW, msisdns=("447700900456",))
    provider = make_provider(synapse, ma1sd)
    spellings = ["447700900456", "+447700900456", "44 7700900456", "(44)7700900456", "+44 7700 900456"]
    for spelling in spellings:
        assert await provider.check_3pid_auth("msisdn", spelling, "wrong") is None
    assert len(ma1sd.requests_for(CHECK_PATH)) == 3
    # The right password is refused too, without asking ma1sd, by any name.
    caplog.set_level(logging.INFO, logger="rest_auth_provider")
    assert await provider.check_3pid_auth("msisdn", "0044 7700 900456", PW) is None
    assert await provider.check_auth("@TOM:example.org", "m.login.password", {"password": PW}) is None
    assert len(ma1sd.requests_for(CHECK_PATH)) == 3
    assert any("without asking ma1sd: too many failed attempts" in r.getMessage() for r in caplog.records)
    # Another user is not affected.
    ma1sd.add_user("@una:example.org", PW)
    assert await provider.check_auth("una", "m.login.password", {"password": PW}) == "@una:example.org"


@ensure_deferred
async def test_failures_by_name_block_a_login_by_phone(synapse: FakeSynapse, ma1sd: FakeMa1sd) -> None:
    synapse.set_failed_attempts(0.0001, 2)
    synapse.add_account("@vic:example.org").threepids = {("msisdn", "447700900457")}
    ma1sd.add_user("@vic:example.org", PW, msisdns=("447700900457",))
    provider = make_provider(synapse, ma1sd)
    for name in ("Vic", "@vic:example.org"):
        assert await provider.check_auth(name, "m.login.password", {"password": "wrong"}) is None
    # Synapse does not know this spelling; the module resolves it to @vic.
    assert await provider.check_3pid_auth("msisdn", "+44 7700 900457", PW) is None
    assert len(ma1sd.requests_for(CHECK_PATH)) == 2


@ensure_deferred
async def test_a_known_number_logs_in_under_any_spelling(synapse: FakeSynapse, ma1sd: FakeMa1sd) -> None:
    synapse.add_account("@wes:example.org").threepids = {("msisdn", "447700900999")}
    ma1sd.add_user("@wes:example.org", PW)
    provider = make_provider(synapse, ma1sd)
    for spelling in ("+44 7700 900999", "0044 7700 900999", "+44 (0) 7700 900999"):
        assert await provider.check_3pid_auth("msisdn", spelling, PW) == "@wes:example.org"
    assert ma1sd.requests_for(LOOKUP_PATH) == []


@ensure_deferred
async def test_password_size_cap(synapse: FakeSynapse, ma1sd: FakeMa1sd) -> None:
    longest = "é" * 512  # 1,024 bytes of UTF-8
    ma1sd.add_user("@xia:example.org", longest)
    provider = make_provider(synapse, ma1sd)
    assert await provider.check_auth("xia", "m.login.password", {"password": longest}) == "@xia:example.org"
    assert await provider.check_auth("xia", "m.login.password", {"password": longest + "x"}) is None
    assert len(ma1sd.requests_for(CHECK_PATH)) == 1


@ensure_deferred
async def test_appservice_namespace_is_refused_before_ma1sd(
    synapse: FakeSynapse, ma1sd: FakeMa1sd, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.unit.fake_synapse import AppService

    synapse.app_services.append(AppService("@bridge_"))
    synapse.add_account("@bridge_alice:example.org")
    ma1sd.add_user("@bridge_alice:example.org", PW)
    ma1sd.add_user("@bridge_new:example.org", PW)
    provider = make_provider(synapse, ma1sd)
    caplog.set_level(logging.INFO, logger="rest_auth_provider")
    assert await provider.check_auth("bridge_alice", "m.login.password", {"password": PW}) is None
    assert await provider.check_auth("Bridge_New", "m.login.password", {"password": PW}) is None
    assert ma1sd.requests == []
    assert "@bridge_new:example.org" not in synapse.accounts
    refusals = [r.getMessage() for r in caplog.records if "exclusive namespace" in r.getMessage()]
    assert len(refusals) == 2


@ensure_deferred
async def test_an_owned_address_is_never_moved(
    synapse: FakeSynapse, ma1sd: FakeMa1sd, caplog: pytest.LogCaptureFixture
) -> None:
    """A new account skips the 3PID read; only the atomic claim stands between
    Synapse's moving upsert and another account's address."""
    synapse.add_account("@first:example.org").threepids = {("email", "team@example.org")}
    ma1sd.add_user("@second:example.org", PW, emails=("team@example.org", "second@example.org"))
    provider = make_provider(synapse, ma1sd)
    assert await provider.check_auth("second", "m.login.password", {"password": PW}) == "@second:example.org"
    assert synapse.owner_of("email", "team@example.org") == "@first:example.org"
    assert synapse.accounts["@second:example.org"].threepids == {("email", "second@example.org")}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "Not adding email team@example.org to @second:example.org: it already belongs to @first:example.org"
    ]


@ensure_deferred
async def test_lookalike_addresses_from_ma1sd_are_not_stored(
    synapse: FakeSynapse, ma1sd: FakeMa1sd, caplog: pytest.LogCaptureFixture
) -> None:
    ma1sd.add_user(
        "@mallory:example.org",
        PW,
        emails=("\u017fam@example.org", "bo\u00df@example.org", "ada@\u212aexample.org", "Mallory@Example.org"),
    )
    provider = make_provider(synapse, ma1sd)
    assert await provider.check_auth("mallory", "m.login.password", {"password": PW}) == "@mallory:example.org"
    assert synapse.accounts["@mallory:example.org"].threepids == {("email", "mallory@example.org")}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert all(w.startswith("Not adding email ") and "not the address as sent" in w for w in warnings)


@ensure_deferred
async def test_control_characters_never_reach_the_log_raw(
    synapse: FakeSynapse, ma1sd: FakeMa1sd, caplog: pytest.LogCaptureFixture
) -> None:
    ma1sd.add_user(
        "@yan:example.org",
        PW,
        extra_three_pids=({"medium": "ldap\nOK forged", "address": "x\x1b[2J"},),
        emails=("yan\x07@example.org",),
    )
    provider = make_provider(synapse, ma1sd)
    caplog.set_level(logging.DEBUG, logger="rest_auth_provider")
    await provider.check_3pid_auth("email", "evil\x1b[31m\x08\x00@example.org", PW)
    await provider.check_auth("yan\x1b", "m.login.password", {"password": PW})
    await provider.check_auth("yan", "m.login.password", {"password": PW})
    messages = [r.getMessage() for r in caplog.records]
    assert any("\\x1b[31m" in m for m in messages)
    for message in messages:
        assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in message), repr(message)


@ensure_deferred
async def test_a_known_address_as_stored_is_left_to_synapse(synapse: FakeSynapse, ma1sd: FakeMa1sd) -> None:
    """Synapse asks the module first, then finds the stored spelling itself
    and calls check_auth: the module must not check the password as well."""
    synapse.add_account("@zed:example.org").threepids = {("msisdn", "447700900998")}
    ma1sd.add_user("@zed:example.org", PW)
    provider = make_provider(synapse, ma1sd)
    assert await provider.check_3pid_auth("msisdn", "447700900998", "wrong") is None
    assert await provider.check_3pid_auth("msisdn", "447700900998", PW) is None
    assert ma1sd.requests == []


# -- issue 15: backend: rest --------------------------------------------------


@pytest.fixture
def store(serve: Serve) -> FakeRestStore:
    return serve(FakeRestStore())


def make_rest_provider(synapse: FakeSynapse, store: FakeRestStore, **config: Any) -> RestAuthProvider:
    raw = {"endpoint": store.url, "timeout": 1, "backend": "rest"}
    raw.update(config)
    return RestAuthProvider(config=RestAuthProvider.parse_config(raw), account_handler=synapse.api)


@ensure_deferred
async def test_rest_backend_first_login_registers_and_provisions(synapse: FakeSynapse, store: FakeRestStore) -> None:
    store.add_user("@ana:example.org", PW, "Ana Store", emails=("Ana@Example.org",))
    provider = make_rest_provider(synapse, store)
    assert await provider.check_auth("Ana", "m.login.password", {"password": PW}) == "@ana:example.org"
    account = synapse.accounts["@ana:example.org"]
    assert account.displayname == "Ana Store"
    assert account.threepids == {("email", "ana@example.org")}
    [check] = store.password_checks()
    assert (check["user_id"], check["localpart"], check["domain"], check["password"]) == (
        "@ana:example.org",
        "ana",
        "example.org",
        PW,
    )


@ensure_deferred
async def test_rest_backend_refusals(
    synapse: FakeSynapse, store: FakeRestStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.add_user("@bo:example.org", PW)
    store.add_user("@cy:example.org", PW)
    store.id_override["@cy:example.org"] = {"type": "localpart", "value": "admin"}
    provider = make_rest_provider(synapse, store)
    caplog.set_level(logging.INFO, logger="rest_auth_provider")
    assert await provider.check_auth("bo", "m.login.password", {"password": "wrong"}) is None  # 401
    assert await provider.check_auth("nobody", "m.login.password", {"password": PW}) is None  # 404
    assert await provider.check_auth("cy", "m.login.password", {"password": PW}) is None  # another id
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (logging.INFO, "Login refused for @bo:example.org: the REST store rejected the credentials") in messages
    assert (logging.INFO, "Login refused for @nobody:example.org: the REST store rejected the credentials") in messages
    mismatch = [m for level, m in messages if level == logging.WARNING]
    assert len(mismatch) == 1 and "@cy:example.org" in mismatch[0] and "admin" in mismatch[0], mismatch
    assert set(synapse.accounts) == set()


@ensure_deferred
async def test_rest_backend_first_login_by_email(synapse: FakeSynapse, store: FakeRestStore) -> None:
    store.add_user("@di:example.org", PW, emails=("di@example.org",))
    provider = make_rest_provider(synapse, store)
    assert await provider.check_3pid_auth("email", "di@example.org", PW) == "@di:example.org"
    assert len(store.lookups()) == 1
    off = make_rest_provider(synapse, store, rest={"identity": {"single": ""}})
    assert await off.check_3pid_auth("email", "other@example.org", PW) is None
    assert len(store.lookups()) == 1


# -- issue 16, item 5: every login counted once, in one place ----------------


def login_counts() -> Dict[str, float]:
    """Returns rest_auth_provider_logins_total by outcome, now."""
    return {
        outcome: REGISTRY.get_sample_value("rest_auth_provider_logins_total", {"outcome": outcome}) or 0.0
        for outcome in metrics.OUTCOMES
    }


def registration_fails(synapse: FakeSynapse) -> None:
    from synapse.api.errors import SynapseError

    synapse.api.register_user.side_effect = lambda *a, **k: defer.fail(
        SynapseError(400, "User ID may only contain a-z, 0-9 and =_-./", errcode="M_INVALID_USERNAME")
    )


def database_fails(synapse: FakeSynapse) -> None:
    synapse.api.check_user_exists.side_effect = RuntimeError("database on fire")


def ma1sd_answers_nonsense(ma1sd: FakeMa1sd) -> None:
    ma1sd.fault = Fault("body", body=b'{"auth": {"success": 1}}')


def ma1sd_fails(ma1sd: FakeMa1sd) -> None:
    ma1sd.fault = Fault("status", status=500, body=b"{}")


# (what goes wrong, the login, what the client gets, the outcome counted)
OUTCOME_CASES: Dict[str, Tuple[Callable[[FakeSynapse, FakeMa1sd], None], Tuple[str, str, str], Optional[str], str]] = {
    "accepted": (lambda s, m: None, ("password", "ola", PW), "@ola:example.org", "success"),
    "wrong password": (lambda s, m: None, ("password", "ola", "wrong"), None, "bad_credentials"),
    "empty password": (lambda s, m: None, ("password", "ola", ""), None, "refused_locally"),
    "ma1sd answers nonsense": (lambda s, m: ma1sd_answers_nonsense(m), ("password", "ola", PW), None, "backend_error"),
    "registration fails": (lambda s, m: registration_fails(s), ("password", "ola", PW), None, "synapse_error"),
    "database fails": (lambda s, m: database_fails(s), ("password", "ola", PW), None, "synapse_error"),
    "3PID accepted": (lambda s, m: None, ("email", "ola@example.org", PW), "@ola:example.org", "success"),
    "3PID unknown to ma1sd": (lambda s, m: None, ("email", "nobody@example.org", PW), None, "bad_credentials"),
    "3PID lookup fails": (
        lambda s, m: ma1sd_fails(m),
        ("email", "ola@example.org", PW),
        None,
        "backend_error",
    ),
    "3PID registration fails": (
        lambda s, m: registration_fails(s),
        ("email", "ola@example.org", PW),
        None,
        "synapse_error",
    ),
}


@pytest.mark.parametrize("case", sorted(OUTCOME_CASES))
@ensure_deferred
async def test_each_login_counts_exactly_one_outcome(
    synapse: FakeSynapse, ma1sd: FakeMa1sd, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    breaks, (kind, who, password), expected_user, outcome = OUTCOME_CASES[case]
    ma1sd.add_user("@ola:example.org", PW, "Ola", emails=("ola@example.org",))
    provider = make_provider(synapse, ma1sd)
    breaks(synapse, ma1sd)
    before = login_counts()

    if kind == "password":
        result = await provider.check_auth(who, "m.login.password", {"password": password})
    else:
        result = await provider.check_3pid_auth(kind, who, password)

    assert result == expected_user
    after = login_counts()
    assert {o: after[o] - before[o] for o in metrics.OUTCOMES if after[o] != before[o]} == {outcome: 1.0}
    if outcome == "synapse_error":
        assert expected_user is None and synapse.accounts == {}
        assert any(r.levelno >= logging.WARNING for r in caplog.records)


@ensure_deferred
async def test_a_registration_failure_is_one_warning_and_a_synapse_error(
    synapse: FakeSynapse, ma1sd: FakeMa1sd, caplog: pytest.LogCaptureFixture
) -> None:
    ma1sd.add_user("@pia:example.org", PW)
    provider = make_provider(synapse, ma1sd)
    registration_fails(synapse)
    caplog.set_level(logging.INFO, logger="rest_auth_provider")

    assert await provider.check_auth("pia", "m.login.password", {"password": PW}) is None

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "Could not create the account @pia:example.org: SynapseError: User ID may only contain a-z, 0-9 and =_-./"
    ]
    assert [r["user_id"] for r in ma1sd.requests_for(CHECK_PATH)] == ["@pia:example.org"]


@ensure_deferred
async def test_a_3pid_login_left_to_synapse_counts_nothing(synapse: FakeSynapse, ma1sd: FakeMa1sd) -> None:
    synapse.add_account("@qi:example.org").threepids = {("email", "qi@example.org")}
    provider = make_provider(synapse, ma1sd)
    before = login_counts()

    assert await provider.check_3pid_auth("email", "qi@example.org", PW) is None
    assert await provider.check_3pid_auth(None, "qi@example.org", PW) is None  # type: ignore[arg-type]

    assert login_counts() == before
    assert ma1sd.requests == []
