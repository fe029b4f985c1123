"""Everything that differs between Synapse releases, in one place.

The public ``ModuleApi`` comes first. Where it lacks something (adding and
removing local 3PIDs in every release; reading and setting display names,
reading 3PIDs and the deactivated flag in old releases) this module reaches
into Synapse's internals. Each choice is made by feature detection, never by
parsing a version string, and made once, when :class:`SynapseCompat` is
built: each operation is bound to the implementation this Synapse supports,
and :meth:`SynapseCompat.describe` names those bound implementations, so that
the start-up log (and the tests) show the branch that runs.
"""

import inspect
import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Awaitable, Callable, Dict, Generic, Iterable, List, Optional, Tuple, TypeVar

from synapse.module_api import make_deferred_yieldable as _make_deferred_yieldable
from twisted.internet import defer

logger = logging.getLogger(__name__)

T = TypeVar("T")

try:  # Synapse >= 1.35 exports it for modules.
    from synapse.module_api.errors import ConfigError as _ConfigError
except ImportError:  # pragma: no cover - depends on the installed Synapse
    from synapse.config._base import ConfigError as _ConfigError

_CONFIG_ERROR_TAKES_PATH = "path" in inspect.signature(_ConfigError.__init__).parameters


def config_error(msg: str, path: Iterable[str]) -> Exception:
    """Returns Synapse's ConfigError for ``msg`` at ``path`` (inside ``config:``).

    Releases whose ConfigError has no ``path`` (before 1.2x) get the path
    written into the message instead, so the admin still sees which key.
    """
    path = tuple(path)
    if _CONFIG_ERROR_TAKES_PATH:
        # Typed loosely: releases whose ConfigError has no ``path`` never get here.
        with_path: Callable[..., Exception] = _ConfigError
        return with_path(msg, path=path)
    where = ".".join(("config",) + path)
    return _ConfigError("rest_auth_provider: %s: %s" % (where, msg))


def make_deferred_yieldable(d: "defer.Deferred[T]") -> "defer.Deferred[T]":
    """Returns ``d`` wrapped so that awaiting it keeps Synapse's log contexts right."""
    # Typed here because Synapse's own is untyped in old releases.
    yieldable: defer.Deferred[T] = _make_deferred_yieldable(d)
    return yieldable


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


def _pairs(entries: Iterable[Any]) -> List[Tuple[str, str]]:
    return [(_field(e, "medium"), _field(e, "address")) for e in entries]


def _localpart(user_id: str) -> str:
    return user_id[1:].split(":", 1)[0]


F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Impl(Generic[F]):
    """One way of doing something, chosen for this Synapse at start-up:
    ``run`` does it, ``name`` says which way (the start-up log shows it)."""

    name: str
    run: F


Forget = Callable[[Optional[str]], None]


# -- the choices: each returns the implementation this Synapse supports -------
#
# Made once, by feature detection. The implementations look Synapse's objects
# up when they run: on Synapse <= 1.45 the ModuleApi is built inside
# AuthHandler.__init__, before the homeserver can hand out its handlers.


def _hs_config(api: Any) -> Any:
    return getattr(getattr(api, "_hs", None), "config", None)


def _server_name(api: Any) -> Impl[Callable[[], str]]:
    if hasattr(api, "server_name"):  # ModuleApi.server_name: 1.53
        return Impl("ModuleApi.server_name", lambda: str(api.server_name))
    return Impl("hs.hostname", lambda: str(api._hs.hostname))


def _is_main_process(api: Any) -> Impl[Callable[[], bool]]:
    if hasattr(api, "worker_app"):  # ModuleApi.worker_app: 1.53
        return Impl("ModuleApi.worker_app", lambda: api.worker_app is None)
    config = _hs_config(api)
    if getattr(config, "worker", None) is not None:
        return Impl("config.worker.worker_app", lambda: getattr(config.worker, "worker_app", None) is None)
    return Impl("config.worker_app", lambda: getattr(config, "worker_app", None) is None)


def _limit_in(section: Any) -> Optional[Tuple[float, float]]:
    """Returns ``(per_second, burst_count)`` of ``rc_login.failed_attempts``
    in this config section, or None when it has no such setting."""
    settings = getattr(section, "rc_login_failed_attempts", None)
    per_second = getattr(settings, "per_second", None)
    burst_count = getattr(settings, "burst_count", None)
    if isinstance(per_second, (int, float)) and isinstance(burst_count, (int, float)):
        return float(per_second), float(burst_count)
    return None


def _failed_login_limit(api: Any) -> Impl[Callable[[], Optional[Tuple[float, float]]]]:
    config = _hs_config(api)
    for section in (getattr(config, "ratelimiting", None), config):  # 1.3x+: config.ratelimiting
        if _limit_in(section) is not None:
            return Impl("rc_login.failed_attempts", partial(_limit_in, section))
    return Impl("Synapse's defaults", lambda: None)


def _localdb_in(section: Any) -> Optional[bool]:
    """Returns ``password_config.localdb_enabled`` in this config section, or None."""
    value = getattr(section, "password_localdb_enabled", None)
    return value if isinstance(value, bool) else None


def _local_passwords_enabled(api: Any) -> Impl[Callable[[], Optional[bool]]]:
    config = _hs_config(api)
    for section in (getattr(config, "auth", None), config):  # 1.3x+: config.auth
        if _localdb_in(section) is not None:
            return Impl("password_config.localdb_enabled", partial(_localdb_in, section))
    return Impl("none (not readable)", lambda: None)


def _is_deactivated(api: Any) -> Impl[Callable[[str], Awaitable[bool]]]:
    async def via_userinfo(user_id: str) -> bool:
        info = await api.get_userinfo_by_id(user_id)
        return bool(info is not None and info.is_deactivated)

    async def via_store(user_id: str) -> bool:
        return bool(await api._store.get_user_deactivated_status(user_id))

    if hasattr(api, "get_userinfo_by_id"):  # 1.41
        return Impl("ModuleApi.get_userinfo_by_id", via_userinfo)
    return Impl("store.get_user_deactivated_status", via_store)


def _find_account(
    api: Any, is_deactivated: Callable[[str], Awaitable[bool]]
) -> Impl[Callable[[str], Awaitable[Tuple[Optional[str], bool]]]]:
    async def by_lookup(user_id: str) -> Tuple[Optional[str], bool]:
        existing = await api.check_user_exists(user_id)
        if existing is None:
            return None, False
        return str(existing), await is_deactivated(str(existing))

    async def cache_first(user_id: str) -> Tuple[Optional[str], bool]:
        info = await api.get_userinfo_by_id(user_id)
        if info is not None:
            return info.user_id.to_string(), bool(info.is_deactivated)
        return await by_lookup(user_id)

    if hasattr(api, "get_userinfo_by_id"):  # 1.41: cached, no transaction on a repeat login
        return Impl("ModuleApi.get_userinfo_by_id, then ModuleApi.check_user_exists", cache_first)
    return Impl("ModuleApi.check_user_exists", by_lookup)


def _get_displayname(api: Any) -> Impl[Callable[[str], Awaitable[Optional[str]]]]:
    async def via_api(user_id: str) -> Optional[str]:
        profile = await api.get_profile_for_user(_localpart(user_id))
        return getattr(profile, "display_name", None)

    async def via_store(user_id: str) -> Optional[str]:
        result = await api._store.get_profile_displayname(_localpart(user_id))
        return None if result is None else str(result)

    if hasattr(api, "get_profile_for_user"):  # 1.39
        return Impl("ModuleApi.get_profile_for_user", via_api)
    return Impl("store.get_profile_displayname", via_store)


def _set_displayname(api: Any) -> Impl[Callable[[str, str], Awaitable[None]]]:
    async def via_api(user_id: str, name: str) -> None:
        from synapse.types import UserID

        # Two positional arguments only: ``deactivation`` is deprecated (1.150).
        await api.set_displayname(UserID.from_string(user_id), name)

    async def via_handler(user_id: str, name: str) -> None:
        from synapse.types import UserID, create_requester

        await api._hs.get_profile_handler().set_displayname(
            target_user=UserID.from_string(user_id),
            requester=create_requester(user_id),
            new_displayname=name,
            by_admin=True,
        )

    if hasattr(api, "set_displayname"):  # 1.76
        return Impl("ModuleApi.set_displayname", via_api)
    return Impl("ProfileHandler.set_displayname", via_handler)


def _get_threepids(api: Any) -> Impl[Callable[[str], Awaitable[List[Tuple[str, str]]]]]:
    async def via_api(user_id: str) -> List[Tuple[str, str]]:
        return _pairs(await api.get_threepids_for_user(user_id))

    async def via_store(user_id: str) -> List[Tuple[str, str]]:
        return _pairs(await api._store.user_get_threepids(user_id))

    if hasattr(api, "get_threepids_for_user"):  # 1.39
        return Impl("ModuleApi.get_threepids_for_user", via_api)
    return Impl("store.user_get_threepids", via_store)


def _get_threepid_owner(api: Any) -> Impl[Callable[[str, str], Awaitable[Optional[str]]]]:
    async def via_store(medium: str, address: str) -> Optional[str]:
        owner = await api._store.get_user_id_by_threepid(medium, address)
        return None if owner is None else str(owner)

    return Impl("store.get_user_id_by_threepid", via_store)


def _add_threepid(
    api: Any, owner_of: Callable[[str, str], Awaitable[Optional[str]]]
) -> Impl[Callable[[str, str, str], Awaitable[Tuple[bool, Optional[str]]]]]:
    async def claim_then_add(user_id: str, medium: str, address: str) -> Tuple[bool, Optional[str]]:
        now_ms = int(time.time() * 1000)
        claimed = await api.run_db_interaction(
            "rest_auth_provider_claim_threepid", _claim_threepid_txn, user_id, medium, address, now_ms
        )
        if not claimed:
            return False, await owner_of(medium, address)
        await api._auth_handler.add_threepid(user_id, medium, address, now_ms)
        return True, None

    return Impl("claim by INSERT ... ON CONFLICT DO NOTHING, then AuthHandler.add_threepid", claim_then_add)


def _delete_threepid(api: Any) -> Impl[Callable[[str, str, str], Awaitable[None]]]:
    async def via_handler(user_id: str, medium: str, address: str) -> None:
        await api._auth_handler.delete_local_threepid(user_id, medium, address)

    async def via_store(user_id: str, medium: str, address: str) -> None:
        # Not AuthHandler.delete_threepid (<= 1.78): that one also unbinds
        # the address at identity servers.
        await api._store.user_delete_threepid(user_id, medium, address)

    handler = getattr(api, "_auth_handler", None)
    # 1.79-1.134 remove a deleted email's pusher through a store method that
    # only the main process has; 1.135 goes through the pusher pool instead.
    if hasattr(handler, "delete_local_threepid") and (  # 1.79
        hasattr(handler, "_pusher_pool")
        or hasattr(getattr(api, "_store", None), "delete_pusher_by_app_id_pushkey_user_id")
    ):
        return Impl("AuthHandler.delete_local_threepid", via_handler)
    return Impl("store.user_delete_threepid", via_store)


def _is_exclusive_appservice_user(api: Any) -> Impl[Callable[[str], bool]]:
    def via_store(user_id: str) -> bool:
        return any(service.is_exclusive_user(user_id) for service in api._store.get_app_services())

    return Impl("store.get_app_services", via_store)


def _parameters(api: Any, name: str) -> Tuple[str, ...]:
    """Returns the parameter names of ``api``'s method ``name``: read from
    the class when it defines a plain method (a test double's bound method
    has no signature of its own), else from the bound object (Synapse before
    1.7x makes some registrars properties); () when none can be read."""
    # __class__, not type(): Mock(spec=ModuleApi) answers ModuleApi.
    unbound: Any = getattr(api.__class__, name, None)
    target: Any = unbound if callable(unbound) else getattr(api, name, None)
    try:
        return tuple(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        return ()


def _watch_deactivations(api: Any) -> Impl[Callable[[Forget], bool]]:
    def watch(forget: Forget) -> bool:
        _DEACTIVATIONS.listeners.append(forget)
        if not _DEACTIVATIONS.registered_with(api):
            api.register_cached_function(_DEACTIVATIONS)

            async def changed(user_id: str, deactivated: bool, by_admin: bool) -> None:
                await api.invalidate_cache(_DEACTIVATIONS, (user_id,))

            api.register_third_party_rules_callbacks(on_user_deactivation_status_changed=changed)
        return True

    register = getattr(api, "register_third_party_rules_callbacks", None)
    if (
        register is not None
        and hasattr(api, "invalidate_cache")
        and hasattr(api, "register_cached_function")
        and "on_user_deactivation_status_changed" in _parameters(api, "register_third_party_rules_callbacks")  # 1.69
    ):
        return Impl("on_user_deactivation_status_changed and ModuleApi.invalidate_cache", watch)
    return Impl("none (profile_recheck_interval off)", lambda forget: False)


class SynapseCompat:
    """Version-independent access to what the provider needs from Synapse:
    each operation runs the implementation chosen for this Synapse when the
    object was built, and :meth:`describe` names those implementations."""

    def __init__(self, api: Any):
        self._chosen: Dict[str, Impl[Any]] = {}
        self._set_displayname = self._choose("display name", _set_displayname(api))
        self._get_displayname = self._choose("profile read", _get_displayname(api))
        self._get_threepids = self._choose("3PID read", _get_threepids(api))
        is_deactivated = self._choose("deactivation check", _is_deactivated(api))
        self._find_account = self._choose("account lookup", _find_account(api, is_deactivated.run))
        owner = _get_threepid_owner(api)
        self._add_threepid = self._choose("3PID add", _add_threepid(api, owner.run))
        self._delete_threepid = self._choose("3PID removal", _delete_threepid(api))
        self._watch_deactivations = self._choose("deactivation notice", _watch_deactivations(api))
        self._failed_login_limit = self._choose("failed-attempt limit", _failed_login_limit(api))
        self._is_exclusive_appservice_user = self._choose("appservice namespaces", _is_exclusive_appservice_user(api))
        self._get_threepid_owner = self._choose("3PID owner lookup", owner)
        self._server_name = self._choose("server name", _server_name(api))
        self._is_main_process = self._choose("process kind", _is_main_process(api))
        self._local_passwords_enabled = self._choose("local passwords", _local_passwords_enabled(api))

    def _choose(self, purpose: str, impl: Impl[F]) -> Impl[F]:
        self._chosen[purpose] = impl
        return impl

    def describe(self) -> Dict[str, str]:
        """Returns the name of the implementation each operation runs on this Synapse."""
        return {purpose: impl.name for purpose, impl in self._chosen.items()}

    # -- identity and settings ----------------------------------------------

    @property
    def server_name(self) -> str:
        """Returns this homeserver's server name."""
        return self._server_name.run()

    @property
    def is_main_process(self) -> bool:
        """Returns True on the main process, False on a worker."""
        return self._is_main_process.run()

    def failed_login_limit(self) -> Optional[Tuple[float, float]]:
        """Returns ``(per_second, burst_count)`` of Synapse's
        ``rc_login.failed_attempts``, or None when it cannot be read."""
        return self._failed_login_limit.run()

    def local_passwords_enabled(self) -> Optional[bool]:
        """Returns Synapse's ``password_config.localdb_enabled``, or None if unknown."""
        return self._local_passwords_enabled.run()

    def is_exclusive_appservice_user(self, user_id: str) -> bool:
        """Returns True when ``user_id`` lies in an application service's
        exclusive user namespace (or is its sender): such IDs belong to the
        appservice, never to a directory user."""
        return self._is_exclusive_appservice_user.run(user_id)

    # -- users ------------------------------------------------------------

    async def find_account(self, user_id: str) -> Tuple[Optional[str], bool]:
        """Returns ``(stored ID, deactivated)`` of the account ``user_id`` names,
        matched case-insensitively like Synapse's own password login;
        ``(None, False)`` when there is none (or several, none exact)."""
        return await self._find_account.run(user_id)

    async def get_displayname(self, user_id: str) -> Optional[str]:
        """Returns the user's display name, or None when it has none."""
        return await self._get_displayname.run(user_id)

    async def set_displayname(self, user_id: str, name: str) -> None:
        """Sets the display name the way Synapse's profile endpoint does, so that
        room memberships and the user directory follow."""
        await self._set_displayname.run(user_id, name)

    # -- 3PIDs ------------------------------------------------------------

    async def get_threepids(self, user_id: str) -> List[Tuple[str, str]]:
        """Returns the user's local 3PIDs as (medium, address) pairs."""
        return await self._get_threepids.run(user_id)

    async def get_threepid_owner(self, medium: str, address: str) -> Optional[str]:
        """Returns the user ID that owns this local 3PID, or None."""
        return await self._get_threepid_owner.run(medium, address)

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
        return await self._add_threepid.run(user_id, medium, address)

    async def delete_threepid(self, user_id: str, medium: str, address: str) -> None:
        """Removes a local 3PID, never touching identity-server bindings."""
        await self._delete_threepid.run(user_id, medium, address)

    # -- deactivation -------------------------------------------------------

    def watch_deactivations(self, forget: Forget) -> bool:
        """Makes ``forget(user_id)`` run on every process of this homeserver
        whenever an account is deactivated or reactivated on any of them
        (``forget(None)`` when Synapse asks to drop everything).

        Returns False when this Synapse cannot tell (older than 1.69: no
        ``on_user_deactivation_status_changed`` callback or no cache
        invalidation across workers); nothing is registered then.
        """
        return self._watch_deactivations.run(forget)
