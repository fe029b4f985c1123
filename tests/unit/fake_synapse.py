"""A strict ModuleApi double for unit tests.

``Mock(spec=ModuleApi)`` built from the installed Synapse's real class, so a
call to a method this Synapse does not have fails the test. Behind it, a tiny
in-memory account store. The private objects the compatibility layer uses
(``_hs``, ``_store``, ``_auth_handler``) are ``Mock(spec=[...])`` with exactly
the methods that layer may call.
"""

from typing import Any, Dict, List, Optional, Set, Tuple
from unittest.mock import AsyncMock, Mock

from synapse.module_api import ModuleApi
from twisted.internet import defer

SERVER_NAME = "example.org"


class UserInUse(Exception):
    errcode = "M_USER_IN_USE"
    msg = "User ID already taken."


class Account:
    def __init__(self, user_id: str, displayname: Optional[str]):
        self.user_id = user_id
        self.displayname = displayname
        self.threepids: Set[Tuple[str, str]] = set()
        self.deactivated = False


class FakeSynapse:
    """An in-memory homeserver behind a spec'd ModuleApi mock."""

    def __init__(self, server_name: str = SERVER_NAME):
        self.server_name = server_name
        self.accounts: Dict[str, Account] = {}
        self.registrations: List[str] = []
        self.lose_registration_race = False
        api = Mock(spec=ModuleApi)
        self.api = api

        hs = Mock(spec=["hostname", "config", "get_profile_handler"])
        hs.hostname = server_name
        hs.config = Mock(spec=["worker"])
        hs.config.worker = Mock(spec=["worker_app"])
        hs.config.worker.worker_app = None
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
            ]
        )
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
        for account in self.accounts.values():
            if (medium, address) in account.threepids:
                return account.user_id
        return None

    async def _add(self, user_id: str, medium: str, address: str, validated_at: int) -> None:
        self.accounts[user_id].threepids.add((medium, address))

    async def _delete(self, user_id: str, medium: str, address: str) -> None:
        self.accounts[user_id].threepids.discard((medium, address))

    async def _api_set_displayname(self, user: Any, name: str) -> None:
        self.accounts[user.to_string()].displayname = name

    async def _handler_set_displayname(
        self, target_user: Any, requester: Any, new_displayname: str, by_admin: bool
    ) -> None:
        self.accounts[target_user.to_string()].displayname = new_displayname
