"""A strict ModuleApi double for unit tests.

``Mock(spec=ModuleApi)`` built from the installed Synapse's real class, so a
call to a method this Synapse does not have fails the test. Behind it, a tiny
in-memory account store. The private objects the compatibility layer uses
(``_hs``, ``_store``, ``_auth_handler``) are ``Mock(spec=[...])`` with exactly
the methods that layer may call.
"""

from typing import Any, Dict, Iterable, List, Optional, Set, Tuple
from unittest.mock import AsyncMock, Mock

from synapse.module_api import ModuleApi
from twisted.internet import defer

SERVER_NAME = "example.org"

# The ModuleApi names the compatibility layer looks for that old releases lack.
LATER_MODULE_API = frozenset(
    {
        "server_name",  # 1.53
        "worker_app",  # 1.53
        "get_profile_for_user",  # 1.39
        "get_threepids_for_user",  # 1.39
        "get_userinfo_by_id",  # 1.41
        "register_third_party_rules_callbacks",
        "register_cached_function",
        "invalidate_cache",
        "set_displayname",  # 1.76
    }
)


def module_api_double(lacks: Iterable[str] = (), **attributes: Any) -> Mock:
    """Returns ``Mock(spec=ModuleApi)`` posing as a Synapse without the names
    in ``lacks`` (removed whichever Synapse is installed) and with
    ``attributes`` set (``_hs``, ``_store``, ``_auth_handler``, or a public
    name; one the installed Synapse is too old to have must be in
    LATER_MODULE_API). Calls on attributes set as mocks, the private objects
    included, are recorded in the double's ``mock_calls``."""
    api = Mock(spec=ModuleApi)
    for name in lacks:
        assert name in LATER_MODULE_API, name
        if hasattr(ModuleApi, name):
            delattr(api, name)
    for name, value in attributes.items():
        assert name.startswith("_") or hasattr(ModuleApi, name) or name in LATER_MODULE_API, name
        setattr(api, name, value)
    return api


class UserInUse(Exception):
    errcode = "M_USER_IN_USE"
    msg = "User ID already taken."


class Account:
    def __init__(self, user_id: str, displayname: Optional[str]):
        self.user_id = user_id
        self.displayname = displayname
        self.threepids: Set[Tuple[str, str]] = set()
        self.deactivated = False


class FakeTxn:
    """The one statement the compatibility layer runs in a transaction: the
    atomic 3PID claim (an insert that does nothing when the address has a row)."""

    def __init__(self, synapse: "FakeSynapse"):
        self._synapse = synapse
        self.rowcount = -1

    def execute(self, sql: str, args: Tuple[Any, ...]) -> None:
        assert sql.startswith("INSERT INTO user_threepids") and "ON CONFLICT (medium, address) DO NOTHING" in sql, sql
        user_id, medium, address, _, _ = args
        if self._synapse.owner_of(medium, address) is not None:
            self.rowcount = 0
            return
        self._synapse.accounts[user_id].threepids.add((medium, address))
        self.rowcount = 1


class AppService:
    """An application service owning the user IDs that start with ``prefix``."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def is_exclusive_user(self, user_id: str) -> bool:
        return user_id.startswith(self.prefix)


class FakeSynapse:
    """An in-memory homeserver behind a spec'd ModuleApi mock."""

    def __init__(self, server_name: str = SERVER_NAME):
        self.server_name = server_name
        self.accounts: Dict[str, Account] = {}
        self.registrations: List[str] = []
        self.lose_registration_race = False
        self.app_services: List[AppService] = []
        self.claims = 0
        api = Mock(spec=ModuleApi)
        self.api = api

        hs = Mock(spec=["hostname", "config", "get_profile_handler"])
        hs.hostname = server_name
        hs.config = Mock(spec=["worker", "ratelimiting"])
        hs.config.worker = Mock(spec=["worker_app"])
        hs.config.worker.worker_app = None
        hs.config.ratelimiting = Mock(spec=["rc_login_failed_attempts"])
        hs.config.ratelimiting.rc_login_failed_attempts = Mock(spec=["per_second", "burst_count"])
        self._hs = hs
        self.set_failed_attempts(0.17, 3)
        profile_handler = Mock(spec=["set_displayname"])
        profile_handler.set_displayname = AsyncMock(side_effect=self._handler_set_displayname)
        hs.get_profile_handler.return_value = profile_handler
        api._hs = hs

        store = Mock(
            spec=[
                "get_user_id_by_threepid",
                "user_get_threepids",
                "user_delete_threepid",
                "get_profile_displayname",
                "get_user_deactivated_status",
                "get_app_services",
            ]
        )
        store.get_app_services.side_effect = lambda: list(self.app_services)
        store.get_user_id_by_threepid = AsyncMock(side_effect=self._owner)
        store.user_get_threepids = AsyncMock(side_effect=self._threepid_dicts)
        store.user_delete_threepid = AsyncMock(side_effect=self._delete)
        store.get_profile_displayname = AsyncMock(
            side_effect=lambda localpart: self.accounts["@%s:%s" % (localpart, server_name)].displayname
        )
        store.get_user_deactivated_status = AsyncMock(side_effect=lambda uid: self.accounts[uid].deactivated)
        api._store = store

        auth_handler = Mock(spec=["add_threepid", "delete_local_threepid", "_pusher_pool"])
        auth_handler.add_threepid = AsyncMock(side_effect=self._add)
        auth_handler.delete_local_threepid = AsyncMock(side_effect=self._delete)
        api._auth_handler = auth_handler

        api.check_user_exists.side_effect = self._check_user_exists
        api.run_db_interaction.side_effect = self._run_db_interaction
        api.register_user.side_effect = self._register_user
        api.get_qualified_user_id.side_effect = (
            lambda name: name
            if name.startswith("@")
            else "@%s:%s"
            % (
                name,
                server_name,
            )
        )
        if hasattr(ModuleApi, "server_name"):
            api.server_name = server_name
        if hasattr(ModuleApi, "worker_app"):
            api.worker_app = None
        if hasattr(ModuleApi, "get_userinfo_by_id"):
            api.get_userinfo_by_id.side_effect = self._userinfo
        if hasattr(ModuleApi, "get_profile_for_user"):
            api.get_profile_for_user.side_effect = self._profile
        if hasattr(ModuleApi, "get_threepids_for_user"):
            api.get_threepids_for_user.side_effect = self._threepid_dicts
        if hasattr(ModuleApi, "set_displayname"):
            api.set_displayname.side_effect = self._api_set_displayname
        if hasattr(ModuleApi, "invalidate_cache"):
            api.invalidate_cache.side_effect = self._invalidate_cache

    def set_failed_attempts(self, per_second: float, burst_count: float) -> None:
        """Sets what Synapse's ``rc_login.failed_attempts`` says."""
        settings = self._hs.config.ratelimiting.rc_login_failed_attempts
        settings.per_second = per_second
        settings.burst_count = burst_count

    def deactivation_callback(self) -> Any:
        """Returns the ``on_user_deactivation_status_changed`` callback the
        provider registered, or None when it registered none."""
        if not hasattr(ModuleApi, "register_third_party_rules_callbacks"):
            return None
        for call in self.api.register_third_party_rules_callbacks.call_args_list:
            if "on_user_deactivation_status_changed" in call.kwargs:
                return call.kwargs["on_user_deactivation_status_changed"]
        return None

    def owner_of(self, medium: str, address: str) -> Optional[str]:
        """Returns the account holding this 3PID, or None."""
        for account in self.accounts.values():
            if (medium, address) in account.threepids:
                return account.user_id
        return None

    def threepid_reads(self) -> int:
        """Returns how often the provider read a user's 3PID list (either way)."""
        reads = self.api._store.user_get_threepids.call_count
        if hasattr(ModuleApi, "get_threepids_for_user"):
            reads += self.api.get_threepids_for_user.call_count
        return int(reads)

    def displayname_reads(self) -> int:
        """Returns how often the provider read a display name (either way)."""
        reads = self.api._store.get_profile_displayname.call_count
        if hasattr(ModuleApi, "get_profile_for_user"):
            reads += self.api.get_profile_for_user.call_count
        return int(reads)

    # -- the in-memory homeserver ------------------------------------------

    def add_account(self, user_id: str, displayname: Optional[str] = None) -> Account:
        account = Account(user_id, displayname)
        self.accounts[user_id] = account
        return account

    def _check_user_exists(self, user_id: str) -> "defer.Deferred[Optional[str]]":
        for stored in self.accounts:
            if stored.lower() == user_id.lower():
                return defer.succeed(stored)
        return defer.succeed(None)

    def _register_user(self, localpart: str, displayname: Optional[str] = None, emails: Any = None) -> Any:
        user_id = "@%s:%s" % (localpart, self.server_name)
        if self.lose_registration_race:
            self.add_account(user_id, "winner")
            return defer.fail(UserInUse())
        assert localpart == localpart.lower(), "Synapse refuses upper-case localparts"
        self.registrations.append(user_id)
        self.add_account(user_id, displayname if displayname is not None else localpart)
        return defer.succeed(user_id)

    async def _userinfo(self, user_id: str) -> Any:
        account = self.accounts.get(user_id)
        if account is None:
            return None
        from synapse.types import UserID

        return Mock(user_id=UserID.from_string(account.user_id), is_deactivated=account.deactivated)

    async def _profile(self, localpart: str) -> Any:
        account = self.accounts["@%s:%s" % (localpart, self.server_name)]
        return Mock(display_name=account.displayname)

    async def _threepid_dicts(self, user_id: str) -> List[Dict[str, str]]:
        return [{"medium": m, "address": a} for m, a in sorted(self.accounts[user_id].threepids)]

    async def _owner(self, medium: str, address: str) -> Optional[str]:
        return self.owner_of(medium, address)

    def _run_db_interaction(self, desc: str, func: Any, *args: Any) -> "defer.Deferred[Any]":
        self.claims += 1
        return defer.succeed(func(FakeTxn(self), *args))

    async def _invalidate_cache(self, cached_func: Any, keys: Tuple[Any, ...]) -> None:
        cached_func.invalidate(keys)

    async def _add(self, user_id: str, medium: str, address: str, validated_at: int) -> None:
        # Synapse's user_add_threepid is an upsert: it moves the address.
        owner = self.owner_of(medium, address)
        if owner is not None:
            self.accounts[owner].threepids.discard((medium, address))
        self.accounts[user_id].threepids.add((medium, address))

    async def _delete(self, user_id: str, medium: str, address: str) -> None:
        self.accounts[user_id].threepids.discard((medium, address))

    async def _api_set_displayname(self, user: Any, name: str) -> None:
        self.accounts[user.to_string()].displayname = name

    async def _handler_set_displayname(
        self, target_user: Any, requester: Any, new_displayname: str, by_admin: bool
    ) -> None:
        self.accounts[target_user.to_string()].displayname = new_displayname
