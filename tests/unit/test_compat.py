"""Each branch of the compatibility layer, whichever Synapse is installed.

The doubles are ``Mock(spec=ModuleApi)`` with the names a release lacks
removed (or added, for a release newer than the installed one), and private
objects (``_hs``, ``_store``, ``_auth_handler``) that are ``Mock(spec=[...])``
with exactly the methods that release has. Each test asserts the calls made,
in order (calls on the private objects show in the double's ``mock_calls``),
and that ``describe()`` names the branch that ran.
"""

import inspect
from types import SimpleNamespace
from typing import Any, List, Optional, Tuple
from unittest.mock import ANY, AsyncMock, Mock, call, create_autospec

import pytest
from synapse.types import UserID, create_requester

from rest_auth_provider._compat import _DEACTIVATIONS, SynapseCompat, _claim_threepid_txn, _parameters
from support.twisted_helpers import ensure_deferred
from tests.unit.fake_synapse import module_api_double

UID = "@ann:example.org"


def hs_double(**config_sections: Any) -> Mock:
    """Returns a homeserver double whose ``config`` has exactly these sections."""
    hs = Mock(spec=["hostname", "config", "get_profile_handler"])
    hs.hostname = "old.example.org"
    hs.config = Mock(spec=list(config_sections))
    for name, value in config_sections.items():
        setattr(hs.config, name, value)
    return hs


def store_double(*methods: str) -> Mock:
    store = Mock(spec=list(methods))
    for name in methods:
        setattr(store, name, AsyncMock())
    return store


def compat_without(*names: str, **attributes: Any) -> SynapseCompat:
    return SynapseCompat(module_api_double(lacks=names, **attributes))


# -- identity and settings --------------------------------------------------


def test_server_name_from_the_module_api() -> None:
    compat = SynapseCompat(module_api_double(server_name="example.org", _hs=hs_double()))
    assert compat.server_name == "example.org"
    assert compat.describe()["server name"] == "ModuleApi.server_name"


def test_server_name_before_1_53_from_the_homeserver() -> None:
    compat = compat_without("server_name", _hs=hs_double())
    assert compat.server_name == "old.example.org"
    assert compat.describe()["server name"] == "hs.hostname"


@pytest.mark.parametrize("worker_app, main", [(None, True), ("synapse.app.generic_worker", False)])
def test_process_kind_from_the_module_api(worker_app: Optional[str], main: bool) -> None:
    compat = SynapseCompat(module_api_double(worker_app=worker_app, _hs=hs_double()))
    assert compat.is_main_process is main
    assert compat.describe()["process kind"] == "ModuleApi.worker_app"


@pytest.mark.parametrize("worker_app, main", [(None, True), ("synapse.app.generic_worker", False)])
def test_process_kind_before_1_53_from_the_worker_config(worker_app: Optional[str], main: bool) -> None:
    worker = Mock(spec=["worker_app"], worker_app=worker_app)
    compat = compat_without("worker_app", _hs=hs_double(worker=worker))
    assert compat.is_main_process is main
    assert compat.describe()["process kind"] == "config.worker.worker_app"


def test_process_kind_from_a_flat_config() -> None:
    compat = compat_without("worker_app", _hs=hs_double(worker_app="synapse.app.generic_worker"))
    assert compat.is_main_process is False
    assert compat.describe()["process kind"] == "config.worker_app"


def limit(per_second: Any, burst_count: Any) -> Mock:
    section = Mock(spec=["rc_login_failed_attempts"])
    section.rc_login_failed_attempts = Mock(spec=["per_second", "burst_count"])
    section.rc_login_failed_attempts.per_second = per_second
    section.rc_login_failed_attempts.burst_count = burst_count
    return section


def test_failed_attempt_limit_from_the_ratelimiting_section() -> None:
    compat = SynapseCompat(module_api_double(_hs=hs_double(ratelimiting=limit(0.5, 7))))
    assert compat.failed_login_limit() == (0.5, 7.0)
    assert compat.describe()["failed-attempt limit"] == "rc_login.failed_attempts"


def test_failed_attempt_limit_from_a_flat_config() -> None:
    hs = hs_double(rc_login_failed_attempts=limit(0.25, 2).rc_login_failed_attempts)
    compat = SynapseCompat(module_api_double(_hs=hs))
    assert compat.failed_login_limit() == (0.25, 2.0)
    assert compat.describe()["failed-attempt limit"] == "rc_login.failed_attempts"


def test_failed_attempt_limit_unreadable_means_synapse_defaults() -> None:
    compat = SynapseCompat(module_api_double(_hs=hs_double(ratelimiting=limit(None, "3"))))
    assert compat.failed_login_limit() is None
    assert compat.describe()["failed-attempt limit"] == "Synapse's defaults"


@pytest.mark.parametrize("enabled", [True, False])
def test_local_passwords_from_the_auth_section(enabled: bool) -> None:
    auth = Mock(spec=["password_localdb_enabled"], password_localdb_enabled=enabled)
    compat = SynapseCompat(module_api_double(_hs=hs_double(auth=auth)))
    assert compat.local_passwords_enabled() is enabled
    assert compat.describe()["local passwords"] == "password_config.localdb_enabled"


def test_local_passwords_from_a_flat_config() -> None:
    compat = SynapseCompat(module_api_double(_hs=hs_double(password_localdb_enabled=False)))
    assert compat.local_passwords_enabled() is False


def test_local_passwords_unknown() -> None:
    compat = SynapseCompat(module_api_double(_hs=hs_double()))
    assert compat.local_passwords_enabled() is None
    assert compat.describe()["local passwords"] == "none (not readable)"


def test_appservice_namespaces_from_the_store() -> None:
    service = Mock(spec=["is_exclusive_user"])
    service.is_exclusive_user.side_effect = lambda user_id: user_id.startswith("@irc_")
    store = Mock(spec=["get_app_services"])
    store.get_app_services.return_value = [service]
    compat = SynapseCompat(module_api_double(_store=store, _hs=hs_double()))
    assert compat.is_exclusive_appservice_user("@irc_bob:example.org") is True
    assert compat.is_exclusive_appservice_user(UID) is False
    assert compat.describe()["appservice namespaces"] == "store.get_app_services"


# -- accounts ---------------------------------------------------------------


def userinfo(user_id: str, deactivated: bool) -> Any:
    return SimpleNamespace(user_id=UserID.from_string(user_id), is_deactivated=deactivated)


@ensure_deferred
async def test_account_lookup_finds_an_exact_id_in_the_cache_first() -> None:
    api = module_api_double(
        get_userinfo_by_id=AsyncMock(return_value=userinfo(UID, True)), check_user_exists=AsyncMock(), _hs=hs_double()
    )
    compat = SynapseCompat(api)

    assert await compat.find_account(UID) == (UID, True)

    assert api.mock_calls == [call.get_userinfo_by_id(UID)]
    described = compat.describe()
    assert described["account lookup"] == "ModuleApi.get_userinfo_by_id, then ModuleApi.check_user_exists"
    assert described["deactivation check"] == "ModuleApi.get_userinfo_by_id"


@ensure_deferred
async def test_account_lookup_falls_back_to_the_case_insensitive_lookup() -> None:
    stored = "@Ann:example.org"
    api = module_api_double(
        get_userinfo_by_id=AsyncMock(side_effect=[None, userinfo(stored, False)]),
        check_user_exists=AsyncMock(return_value=stored),
        _hs=hs_double(),
    )

    assert await SynapseCompat(api).find_account(UID) == (stored, False)

    assert api.mock_calls == [
        call.get_userinfo_by_id(UID),
        call.check_user_exists(UID),
        call.get_userinfo_by_id(stored),
    ]


@ensure_deferred
async def test_account_lookup_before_1_41_asks_the_store_if_deactivated() -> None:
    stored = "@Ann:example.org"
    store = store_double("get_user_deactivated_status")
    store.get_user_deactivated_status.return_value = True
    api = module_api_double(
        ("get_userinfo_by_id",), check_user_exists=AsyncMock(return_value=stored), _store=store, _hs=hs_double()
    )
    compat = SynapseCompat(api)

    assert await compat.find_account(UID) == (stored, True)

    assert api.mock_calls == [call.check_user_exists(UID), call._store.get_user_deactivated_status(stored)]
    described = compat.describe()
    assert described["account lookup"] == "ModuleApi.check_user_exists"
    assert described["deactivation check"] == "store.get_user_deactivated_status"


@ensure_deferred
async def test_account_lookup_of_nobody() -> None:
    api = module_api_double(("get_userinfo_by_id",), check_user_exists=AsyncMock(return_value=None), _hs=hs_double())
    assert await SynapseCompat(api).find_account(UID) == (None, False)
    assert api.mock_calls == [call.check_user_exists(UID)]


# -- display name -----------------------------------------------------------


@ensure_deferred
async def test_display_name_read_through_the_module_api() -> None:
    api = module_api_double(
        get_profile_for_user=AsyncMock(return_value=SimpleNamespace(display_name="Ann")), _hs=hs_double()
    )
    compat = SynapseCompat(api)
    assert await compat.get_displayname(UID) == "Ann"
    assert api.mock_calls == [call.get_profile_for_user("ann")]
    assert compat.describe()["profile read"] == "ModuleApi.get_profile_for_user"


@ensure_deferred
async def test_display_name_read_before_1_39_from_the_store() -> None:
    store = store_double("get_profile_displayname")
    store.get_profile_displayname.return_value = None
    api = module_api_double(("get_profile_for_user",), _store=store, _hs=hs_double())
    compat = SynapseCompat(api)
    assert await compat.get_displayname(UID) is None
    assert api.mock_calls == [call._store.get_profile_displayname("ann")]
    assert compat.describe()["profile read"] == "store.get_profile_displayname"


@ensure_deferred
async def test_display_name_set_through_the_module_api_with_two_arguments() -> None:
    api = module_api_double(set_displayname=AsyncMock(), _hs=hs_double())
    compat = SynapseCompat(api)
    await compat.set_displayname(UID, "Ann B")
    assert api.mock_calls == [call.set_displayname(UserID.from_string(UID), "Ann B")]
    assert compat.describe()["display name"] == "ModuleApi.set_displayname"


def before_1_76() -> Tuple[Mock, Mock, Mock]:
    """Returns (homeserver, profile handler, module API) doubles of a Synapse before 1.76:
    no ``ModuleApi.set_displayname``; the handler's ``set_displayname`` is an AsyncMock."""
    hs = hs_double()
    handler = Mock(spec=["set_displayname"])
    handler.set_displayname = AsyncMock()
    hs.get_profile_handler.return_value = handler
    return hs, handler, module_api_double(("set_displayname",), _hs=hs)


@ensure_deferred
async def test_display_name_set_before_1_76_through_the_profile_handler() -> None:
    hs, handler, api = before_1_76()
    compat = SynapseCompat(api)
    hs.get_profile_handler.assert_not_called()  # looked up when used, not at start-up

    await compat.set_displayname(UID, "Ann B")

    handler.set_displayname.assert_awaited_once_with(
        target_user=UserID.from_string(UID), requester=create_requester(UID), new_displayname="Ann B", by_admin=True
    )
    assert compat.describe()["display name"] == "ProfileHandler.set_displayname"


@ensure_deferred
async def test_the_choice_is_made_once_at_start_up() -> None:
    _, handler, api = before_1_76()
    compat = SynapseCompat(api)
    api.set_displayname = AsyncMock()  # appears later: the bound branch still runs

    await compat.set_displayname(UID, "Ann B")

    api.set_displayname.assert_not_called()
    assert handler.set_displayname.await_count == 1


# -- 3PIDs ------------------------------------------------------------------


@ensure_deferred
async def test_3pids_read_through_the_module_api_as_dicts_or_results() -> None:
    entries = [{"medium": "email", "address": "ann@example.org"}, SimpleNamespace(medium="msisdn", address="4477")]
    api = module_api_double(get_threepids_for_user=AsyncMock(return_value=entries), _hs=hs_double())
    compat = SynapseCompat(api)
    assert await compat.get_threepids(UID) == [("email", "ann@example.org"), ("msisdn", "4477")]
    assert api.mock_calls == [call.get_threepids_for_user(UID)]
    assert compat.describe()["3PID read"] == "ModuleApi.get_threepids_for_user"


@ensure_deferred
async def test_3pids_read_before_1_39_from_the_store() -> None:
    store = store_double("user_get_threepids")
    store.user_get_threepids.return_value = [{"medium": "email", "address": "ann@example.org", "validated_at": 1}]
    api = module_api_double(("get_threepids_for_user",), _store=store, _hs=hs_double())
    compat = SynapseCompat(api)
    assert await compat.get_threepids(UID) == [("email", "ann@example.org")]
    assert api.mock_calls == [call._store.user_get_threepids(UID)]
    assert compat.describe()["3PID read"] == "store.user_get_threepids"


@pytest.mark.parametrize("owner", ["@bob:example.org", None])
@ensure_deferred
async def test_3pid_owner_from_the_store(owner: Optional[str]) -> None:
    store = store_double("get_user_id_by_threepid")
    store.get_user_id_by_threepid.return_value = owner
    api = module_api_double(_store=store, _hs=hs_double())
    compat = SynapseCompat(api)
    assert await compat.get_threepid_owner("email", "x@example.org") == owner
    assert api.mock_calls == [call._store.get_user_id_by_threepid("email", "x@example.org")]
    assert compat.describe()["3PID owner lookup"] == "store.get_user_id_by_threepid"


@ensure_deferred
async def test_3pid_add_claims_the_address_then_goes_through_the_handler() -> None:
    handler = Mock(spec=["add_threepid"])
    handler.add_threepid = AsyncMock()
    api = module_api_double(run_db_interaction=AsyncMock(return_value=True), _auth_handler=handler, _hs=hs_double())
    compat = SynapseCompat(api)

    assert await compat.add_threepid(UID, "email", "ann@example.org") == (True, None)

    now_ms = api.run_db_interaction.call_args[0][-1]
    assert api.mock_calls == [
        call.run_db_interaction(
            "rest_auth_provider_claim_threepid", _claim_threepid_txn, UID, "email", "ann@example.org", ANY
        ),
        call._auth_handler.add_threepid(UID, "email", "ann@example.org", now_ms),
    ]
    assert "AuthHandler.add_threepid" in compat.describe()["3PID add"]


@ensure_deferred
async def test_3pid_add_of_a_claimed_address_only_reads_its_owner() -> None:
    handler = Mock(spec=["add_threepid"])
    store = store_double("get_user_id_by_threepid")
    store.get_user_id_by_threepid.return_value = "@bob:example.org"
    api = module_api_double(
        run_db_interaction=AsyncMock(return_value=False), _auth_handler=handler, _store=store, _hs=hs_double()
    )

    assert await SynapseCompat(api).add_threepid(UID, "email", "bob@example.org") == (False, "@bob:example.org")

    assert api.mock_calls == [
        call.run_db_interaction(
            "rest_auth_provider_claim_threepid", _claim_threepid_txn, UID, "email", "bob@example.org", ANY
        ),
        call._store.get_user_id_by_threepid("email", "bob@example.org"),
    ]


# 3PID removal: the handler where it is safe, else the store. The store's
# pusher method exists on the main process only (PusherStore).
HANDLER_WITH_POOL = ["add_threepid", "delete_threepid", "delete_local_threepid", "_pusher_pool"]  # 1.135+
HANDLER_1_79 = ["add_threepid", "delete_threepid", "delete_local_threepid"]  # 1.79-1.134
HANDLER_1_78 = ["add_threepid", "delete_threepid"]  # up to 1.78
MAIN_STORE = ["user_delete_threepid", "delete_pusher_by_app_id_pushkey_user_id"]
WORKER_STORE = ["user_delete_threepid"]
REMOVALS = {
    "1.135+": (HANDLER_WITH_POOL, WORKER_STORE, "AuthHandler.delete_local_threepid"),
    "1.79-1.134 main process": (HANDLER_1_79, MAIN_STORE, "AuthHandler.delete_local_threepid"),
    "1.79-1.134 worker": (HANDLER_1_79, WORKER_STORE, "store.user_delete_threepid"),
    "up to 1.78": (HANDLER_1_78, MAIN_STORE, "store.user_delete_threepid"),
}


@pytest.mark.parametrize("release", sorted(REMOVALS))
@ensure_deferred
async def test_3pid_removal_never_unbinds_at_identity_servers(release: str) -> None:
    handler_methods, store_methods, expected = REMOVALS[release]
    handler = Mock(spec=handler_methods)
    for name in handler_methods:
        setattr(handler, name, AsyncMock())
    api = module_api_double(_auth_handler=handler, _store=store_double(*store_methods), _hs=hs_double())
    compat = SynapseCompat(api)

    await compat.delete_threepid(UID, "email", "old@example.org")

    where = (
        "_auth_handler.delete_local_threepid" if expected.startswith("AuthHandler") else "_store.user_delete_threepid"
    )
    assert api.mock_calls == [getattr(call, where)(UID, "email", "old@example.org")]
    handler.delete_threepid.assert_not_called()  # it would unbind at identity servers
    assert compat.describe()["3PID removal"] == expected


# -- deactivation notices -----------------------------------------------------


def third_party_rules_callbacks(
    *, check_event_allowed: Any = None, on_user_deactivation_status_changed: Any = None
) -> None:
    """Stands for ModuleApi.register_third_party_rules_callbacks of 1.69+."""


def third_party_rules_callbacks_before_1_69(*, check_event_allowed: Any = None) -> None:
    """Stands for ModuleApi.register_third_party_rules_callbacks of 1.39-1.68."""


@ensure_deferred
async def test_deactivations_heard_through_a_replicated_cache() -> None:
    register = create_autospec(third_party_rules_callbacks)
    # A stricter double than Mock(spec=ModuleApi): the installed ModuleApi
    # class (1.46-1.68 on the older tox environments) would lend its own signature.
    api = Mock(spec=["register_third_party_rules_callbacks", "register_cached_function", "invalidate_cache"])
    api.register_third_party_rules_callbacks = register
    api.register_cached_function = Mock()
    api.invalidate_cache = AsyncMock()
    compat = SynapseCompat(api)
    assert compat.describe()["deactivation notice"] == (
        "on_user_deactivation_status_changed and ModuleApi.invalidate_cache"
    )
    forgotten: List[Optional[str]] = []

    assert compat.watch_deactivations(forgotten.append) is True

    api.register_cached_function.assert_called_once_with(_DEACTIVATIONS)
    changed = register.call_args[1]["on_user_deactivation_status_changed"]
    await changed(UID, True, False)
    api.invalidate_cache.assert_awaited_once_with(_DEACTIVATIONS, (UID,))
    _DEACTIVATIONS.invalidate((UID,))  # what Synapse does on every process
    assert forgotten == [UID]


def test_deactivations_unheard_without_cache_invalidation() -> None:
    api = module_api_double(("invalidate_cache",), _store=store_double(), _hs=hs_double())
    compat = SynapseCompat(api)
    assert compat.watch_deactivations(lambda user_id: None) is False
    assert api.mock_calls == []
    assert compat.describe()["deactivation notice"] == "none (profile_recheck_interval off)"


def test_deactivations_unheard_before_the_callback_existed() -> None:
    # A stricter double than Mock(spec=ModuleApi): the installed ModuleApi
    # class would lend its own (newer) signature.
    register = create_autospec(third_party_rules_callbacks_before_1_69)
    api = Mock(spec=["register_third_party_rules_callbacks", "register_cached_function", "invalidate_cache"])
    api.register_third_party_rules_callbacks = register
    assert "on_user_deactivation_status_changed" not in inspect.signature(register).parameters
    compat = SynapseCompat(api)
    assert compat.watch_deactivations(lambda user_id: None) is False
    register.assert_not_called()
    assert api.mock_calls == []
    assert compat.describe()["deactivation notice"] == "none (profile_recheck_interval off)"


# -- describe() ---------------------------------------------------------------


def test_describe_names_one_implementation_per_operation() -> None:
    described = SynapseCompat(module_api_double(_hs=hs_double())).describe()
    assert list(described) == [
        "display name",
        "profile read",
        "3PID read",
        "deactivation check",
        "account lookup",
        "3PID add",
        "3PID removal",
        "deactivation notice",
        "failed-attempt limit",
        "appservice namespaces",
        "3PID owner lookup",
        "server name",
        "process kind",
        "local passwords",
    ]
    assert all(isinstance(name, str) and name for name in described.values())


class _RegistrarAsProperty:
    """Stands for a ModuleApi whose registrar is a property (as in Synapse 1.39-1.7x)."""

    @property
    def register_third_party_rules_callbacks(self) -> Any:
        return third_party_rules_callbacks


class _RegistrarAsMethod:
    def register_third_party_rules_callbacks(self, *, check_event_allowed: Any = None) -> None:
        """Stands for a registrar without the 1.69 callback."""


def test_the_registrars_parameters_are_read_from_a_property_or_the_class() -> None:
    assert "on_user_deactivation_status_changed" in _parameters(
        _RegistrarAsProperty(), "register_third_party_rules_callbacks"
    )
    assert _parameters(_RegistrarAsMethod(), "register_third_party_rules_callbacks") == ("self", "check_event_allowed")
    assert _parameters(object(), "register_third_party_rules_callbacks") == ()
