"""Everything that differs between Synapse releases, in one place.

The public ``ModuleApi`` comes first. Where it lacks something (adding and
removing local 3PIDs in every release; reading and setting display names,
reading 3PIDs and the deactivated flag in old releases) this module reaches
into Synapse's internals. Each choice is made by feature detection, never by
parsing a version string, and :meth:`SynapseCompat.describe` reports the
choices so that the start-up log (and the tests) show which branch runs.
"""

import inspect
import logging
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, TypeVar

from synapse.module_api import make_deferred_yieldable as _make_deferred_yieldable
from twisted.internet import defer

logger = logging.getLogger(__name__)

T = TypeVar("T")

try:  # Synapse >= 1.35 exports it for modules.
    from synapse.module_api.errors import ConfigError as _ConfigError
except ImportError:  # pragma: no cover - depends on the installed Synapse
    from synapse.config._base import ConfigError as _ConfigError  # type: ignore[assignment,no-redef]

_CONFIG_ERROR_TAKES_PATH = "path" in inspect.signature(_ConfigError.__init__).parameters


def config_error(msg: str, path: Iterable[str]) -> Exception:
    """Returns Synapse's ConfigError for ``msg`` at ``path`` (inside ``config:``).

    Releases whose ConfigError has no ``path`` (before 1.2x) get the path
    written into the message instead, so the admin still sees which key.
    """
    path = tuple(path)
    if _CONFIG_ERROR_TAKES_PATH:
        return _ConfigError(msg, path=path)  # type: ignore[call-arg]
    where = ".".join(("config",) + path)
    return _ConfigError("rest_auth_provider: %s: %s" % (where, msg))


def make_deferred_yieldable(d: "defer.Deferred[T]") -> "defer.Deferred[T]":
    """Returns ``d`` wrapped so that awaiting it keeps Synapse's log contexts right."""
    return _make_deferred_yieldable(d)  # type: ignore[no-any-return]


def _claim_threepid_txn(txn: Any, user_id: str, medium: str, address: str, now_ms: int) -> bool:
    """Inserts the 3PID for ``user_id`` unless the address has a row already;
    returns True when this transaction inserted it."""
    txn.execute(
        "INSERT INTO user_threepids (user_id, medium, address, validated_at, added_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (medium, address) DO NOTHING",
        (user_id, medium, address, now_ms, now_ms),
    )
    return bool(txn.rowcount == 1)


class _DeactivationListeners:
    """Synapse's replicated cache invalidation, used as a message: each
    process registers this object as a module cache; when an account is
    (de)activated anywhere, its ID is "invalidated" here on every process,
    which tells the listeners to forget what they remembered about it."""

    __name__ = "rest_auth_provider_deactivations"

    def __init__(self) -> None:
        self.listeners: List[Callable[[Optional[str]], None]] = []
        self._apis: List[Any] = []

    def registered_with(self, api: Any) -> bool:
        """Returns True when ``api``'s homeserver already has this registered;
        records it otherwise (a module listed twice registers once)."""
        store = getattr(api, "_store", None)
        if any(getattr(a, "_store", None) is store for a in self._apis):
            return True
        self._apis.append(api)
        return False

    def invalidate(self, keys: Iterable[Any]) -> None:
        for user_id in keys:
            for forget in self.listeners:
                forget(str(user_id))

    def invalidate_local(self, keys: Iterable[Any]) -> None:
        self.invalidate(keys)

    def invalidate_all(self) -> None:
        for forget in self.listeners:
            forget(None)


_DEACTIVATIONS = _DeactivationListeners()


def _field(entry: Any, name: str) -> str:
    """Returns a 3PID field from a dict (Synapse <= 1.94) or a ThreepidResult (>= 1.95)."""
    if isinstance(entry, dict):
        return str(entry[name])
    return str(getattr(entry, name))


class SynapseCompat:
    """Version-independent access to what the provider needs from Synapse."""

    def __init__(self, api: Any):
        self._api = api
        # Resolved lazily: on Synapse <= 1.45 the ModuleApi is built inside
        # AuthHandler.__init__, so the handler must not be looked up from there.
        self._hs = getattr(api, "_hs", None)

    # -- identity ---------------------------------------------------------

    @property
    def server_name(self) -> str:
        """Returns this homeserver's server name."""
        if hasattr(self._api, "server_name"):  # ModuleApi.server_name: 1.53
            return str(self._api.server_name)
        return str(self._hs.hostname)  # type: ignore[union-attr]

    @property
    def is_main_process(self) -> bool:
        """Returns True on the main process, False on a worker."""
        if hasattr(self._api, "worker_app"):  # ModuleApi.worker_app: 1.53
            return self._api.worker_app is None
        config = self._hs.config  # type: ignore[union-attr]
        worker = getattr(config, "worker", None)
        worker_app = getattr(worker, "worker_app", None) if worker is not None else getattr(config, "worker_app", None)
        return worker_app is None

    def failed_login_limit(self) -> Optional[Tuple[float, float]]:
        """Returns ``(per_second, burst_count)`` of Synapse's
        ``rc_login.failed_attempts``, or None when it cannot be read."""
        config = getattr(self._hs, "config", None)
        for section in (getattr(config, "ratelimiting", None), config):  # 1.3x+: config.ratelimiting
            settings = getattr(section, "rc_login_failed_attempts", None)
            per_second = getattr(settings, "per_second", None)
            burst_count = getattr(settings, "burst_count", None)
            if isinstance(per_second, (int, float)) and isinstance(burst_count, (int, float)):
                return float(per_second), float(burst_count)
        return None

    def is_exclusive_appservice_user(self, user_id: str) -> bool:
        """Returns True when ``user_id`` lies in an application service's
        exclusive user namespace (or is its sender): such IDs belong to the
        appservice, never to a directory user."""
        return any(service.is_exclusive_user(user_id) for service in self._store().get_app_services())

    def local_passwords_enabled(self) -> Optional[bool]:
        """Returns Synapse's ``password_config.localdb_enabled``, or None if unknown."""
        config = getattr(self._hs, "config", None)
        for section in (getattr(config, "auth", None), config):  # 1.3x+: config.auth
            value = getattr(section, "password_localdb_enabled", None)
            if isinstance(value, bool):
                return value
        return None

    def _store(self) -> Any:
        return self._api._store

    def _auth_handler(self) -> Any:
        return self._api._auth_handler

    # -- users ------------------------------------------------------------

    async def find_account(self, user_id: str) -> Tuple[Optional[str], bool]:
        """Returns ``(stored ID, deactivated)`` of the account ``user_id`` names,
        matched case-insensitively like Synapse's own password login;
        ``(None, False)`` when there is none (or several, none exact).

        Since 1.41 an exact match comes from Synapse's cache of
        ``get_user_by_id`` (no database transaction on a repeat login); only a
        miss falls back to the case-insensitive lookup.
        """
        if hasattr(self._api, "get_userinfo_by_id"):  # 1.41
            info = await self._api.get_userinfo_by_id(user_id)
            if info is not None:
                return info.user_id.to_string(), bool(info.is_deactivated)
        existing = await self._api.check_user_exists(user_id)
        if existing is None:
            return None, False
        return str(existing), await self.is_deactivated(str(existing))

    async def is_deactivated(self, user_id: str) -> bool:
        """Returns True when the (existing) account is deactivated."""
        if hasattr(self._api, "get_userinfo_by_id"):  # 1.41
            info = await self._api.get_userinfo_by_id(user_id)
            return bool(info is not None and info.is_deactivated)
        return bool(await self._store().get_user_deactivated_status(user_id))

    # -- display name -----------------------------------------------------

    async def get_displayname(self, user_id: str) -> Optional[str]:
        """Returns the user's display name, or None when it has none."""
        localpart = user_id[1:].split(":", 1)[0]
        if hasattr(self._api, "get_profile_for_user"):  # 1.39
            profile = await self._api.get_profile_for_user(localpart)
            return getattr(profile, "display_name", None)
        result = await self._store().get_profile_displayname(localpart)
        return None if result is None else str(result)

    async def set_displayname(self, user_id: str, name: str) -> None:
        """Sets the display name the way Synapse's profile endpoint does, so that
        room memberships and the user directory follow."""
        from synapse.types import UserID

        target = UserID.from_string(user_id)
        if hasattr(self._api, "set_displayname"):  # 1.76
            # Two positional arguments only: ``deactivation`` is deprecated (1.150).
            await self._api.set_displayname(target, name)
            return
        from synapse.types import create_requester

        handler = self._hs.get_profile_handler()  # type: ignore[union-attr]
        await handler.set_displayname(
            target_user=target,
            requester=create_requester(user_id),
            new_displayname=name,
            by_admin=True,
        )

    # -- 3PIDs ------------------------------------------------------------

    async def get_threepids(self, user_id: str) -> List[Tuple[str, str]]:
        """Returns the user's local 3PIDs as (medium, address) pairs."""
        if hasattr(self._api, "get_threepids_for_user"):  # 1.39
            entries: Iterable[Any] = await self._api.get_threepids_for_user(user_id)
        else:
            entries = await self._store().user_get_threepids(user_id)
        return [(_field(e, "medium"), _field(e, "address")) for e in entries]

    async def get_threepid_owner(self, medium: str, address: str) -> Optional[str]:
        """Returns the user ID that owns this local 3PID, or None."""
        owner = await self._store().get_user_id_by_threepid(medium, address)
        return None if owner is None else str(owner)

    async def add_threepid(self, user_id: str, medium: str, address: str) -> Tuple[bool, Optional[str]]:
        """Adds a validated local 3PID unless an account owns it already.

        Returns ``(True, None)`` when this call added it, else ``(False,
        owner)``: the account that holds it (maybe ``user_id`` itself; None
        if it was gone again by the time it was read). Synapse's own add is an
        upsert that would move an address from its owner, so the address is
        first claimed with one atomic insert: the table's unique index on
        (medium, address) decides between concurrent logins on every worker.
        Only the winner then goes through the auth handler, which stores the
        same row again and fires modules' callbacks.
        """
        now_ms = int(time.time() * 1000)
        claimed = await self._api.run_db_interaction(
            "rest_auth_provider_claim_threepid", _claim_threepid_txn, user_id, medium, address, now_ms
        )
        if not claimed:
            return False, await self.get_threepid_owner(medium, address)
        await self._auth_handler().add_threepid(user_id, medium, address, now_ms)
        return True, None

    def _delete_handler_usable(self) -> bool:
        handler = self._auth_handler()
        if not hasattr(handler, "delete_local_threepid"):  # 1.79
            return False
        # 1.79-1.134 remove a deleted email's pusher through a store method that
        # only the main process has; 1.135 goes through the pusher pool instead.
        return hasattr(handler, "_pusher_pool") or hasattr(self._store(), "delete_pusher_by_app_id_pushkey_user_id")

    async def delete_threepid(self, user_id: str, medium: str, address: str) -> None:
        """Removes a local 3PID, never touching identity-server bindings."""
        if self._delete_handler_usable():
            await self._auth_handler().delete_local_threepid(user_id, medium, address)
        else:
            # Not AuthHandler.delete_threepid (<= 1.78): that one also unbinds
            # the address at identity servers.
            await self._store().user_delete_threepid(user_id, medium, address)

    # -- deactivation -------------------------------------------------------

    def _can_watch_deactivations(self) -> bool:
        api = self._api
        register = getattr(api, "register_third_party_rules_callbacks", None)
        if register is None or not hasattr(api, "invalidate_cache") or not hasattr(api, "register_cached_function"):
            return False
        # The class's signature: a test double's bound method has none.
        unbound = getattr(api.__class__, "register_third_party_rules_callbacks", register)
        return "on_user_deactivation_status_changed" in inspect.signature(unbound).parameters

    def watch_deactivations(self, forget: Callable[[Optional[str]], None]) -> bool:
        """Makes ``forget(user_id)`` run on every process of this homeserver
        whenever an account is deactivated or reactivated on any of them
        (``forget(None)`` when Synapse asks to drop everything).

        Returns False when this Synapse cannot tell (older than 1.69: no
        ``on_user_deactivation_status_changed`` callback or no cache
        invalidation across workers); nothing is registered then.
        """
        api = self._api
        if not self._can_watch_deactivations():
            return False
        register = api.register_third_party_rules_callbacks
        _DEACTIVATIONS.listeners.append(forget)
        if not _DEACTIVATIONS.registered_with(api):
            api.register_cached_function(_DEACTIVATIONS)

            async def changed(user_id: str, deactivated: bool, by_admin: bool) -> None:
                await api.invalidate_cache(_DEACTIVATIONS, (user_id,))

            register(on_user_deactivation_status_changed=changed)
        return True

    # -- reporting --------------------------------------------------------

    def describe(self) -> Dict[str, str]:
        """Returns which implementation each operation uses on this Synapse."""
        api = self._api
        return {
            "display name": "ModuleApi.set_displayname"
            if hasattr(api, "set_displayname")
            else "ProfileHandler.set_displayname",
            "profile read": "ModuleApi.get_profile_for_user"
            if hasattr(api, "get_profile_for_user")
            else "store.get_profile_displayname",
            "3PID read": "ModuleApi.get_threepids_for_user"
            if hasattr(api, "get_threepids_for_user")
            else "store.user_get_threepids",
            "account lookup": "ModuleApi.get_userinfo_by_id, then ModuleApi.check_user_exists"
            if hasattr(api, "get_userinfo_by_id")
            else "ModuleApi.check_user_exists",
            "deactivation check": "ModuleApi.get_userinfo_by_id"
            if hasattr(api, "get_userinfo_by_id")
            else "store.get_user_deactivated_status",
            "3PID add": "claim by INSERT ... ON CONFLICT DO NOTHING, then AuthHandler.add_threepid",
            "3PID removal": "AuthHandler.delete_local_threepid"
            if self._delete_handler_usable()
            else "store.user_delete_threepid",
            "deactivation notice": "on_user_deactivation_status_changed and ModuleApi.invalidate_cache"
            if self._can_watch_deactivations()
            else "none (profile_recheck_interval off)",
            "failed-attempt limit": "rc_login.failed_attempts"
            if self.failed_login_limit() is not None
            else "Synapse's defaults",
            "appservice namespaces": "store.get_app_services",
        }
