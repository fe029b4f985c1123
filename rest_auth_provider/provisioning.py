"""Creating accounts and keeping profiles in step with ma1sd.

Policies (the old provider's keys and defaults):

* ``policy.registration.profile.name`` - display name from ma1sd at registration;
* ``policy.login.profile.name`` - display name refreshed on every login;
* ``policy.all.threepid.update`` - add ma1sd's email and msisdn 3PIDs;
* ``policy.all.threepid.replace`` - remove local 3PIDs ma1sd no longer lists.

The rules are :mod:`rest_auth_provider.syncplan`'s (which ``check --user``
prints too); this module reads the account, applies the plan and logs.
What a login found already in step is remembered for
``profile_recheck_interval`` seconds (see :mod:`rest_auth_provider.memo`).
"""

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from rest_auth_provider import metrics
from rest_auth_provider.config import PolicyConfig
from rest_auth_provider.memo import SyncMemo
from rest_auth_provider.response import AuthReply
from rest_auth_provider.safetext import printable
from rest_auth_provider.syncplan import AccountState, ThreePidKey, WantedProfile, plan_sync, wanted_profile

if TYPE_CHECKING:  # only the provider imports _compat (and so Synapse)
    from rest_auth_provider._compat import SynapseCompat

logger = logging.getLogger(__name__)

_USER_IN_USE = "M_USER_IN_USE"
_DISPLAY_NAME = "displayname"
_THREEPIDS = "threepids"


class Provisioner:
    """Registers new users and syncs display names and 3PIDs."""

    def __init__(self, api: Any, compat: "SynapseCompat", policy: PolicyConfig, memo: SyncMemo, source: str = "ma1sd"):
        """``source`` names the identity service in log lines ("ma1sd", "the REST store")."""
        self._source = source
        self._api = api
        self._compat = compat
        self._policy = policy
        self._memo = memo

    async def register(self, localpart: str, user_id: str, display_name: Optional[str]) -> Tuple[Optional[str], bool]:
        """Creates the account for ``localpart`` (no device, no access token).

        Returns ``(user_id, created)``: the account's ID and whether this call
        created it (False when a concurrent login won the race). The ID is None
        when the account could not be created.
        """
        wanted = wanted_profile(AuthReply(success=True, display_name=display_name), self._policy)
        name = plan_sync(wanted, AccountState(exists=False)).display_name
        try:
            created_id = await self._api.register_user(localpart, displayname=name)
        except Exception as e:
            if getattr(e, "errcode", None) != _USER_IN_USE:
                logger.warning("Could not create the account %s: %s", user_id, _error_text(e))
                return None, False
            # Another login (maybe on another worker) created it first.
            existing = await self._api.check_user_exists(user_id)
            if existing is None:
                logger.warning("Could not create the account %s: taken, yet not found", user_id)
            return existing, False
        metrics.registrations.inc()
        logger.info("Created the account %s on its first login", created_id)
        return str(created_id), True

    def forget(self, user_id: str) -> None:
        """Makes the next login of ``user_id`` read the profile again (used when
        the account was found deactivated: Synapse drops its 3PIDs then)."""
        self._memo.forget_user(user_id)

    async def sync(self, user_id: str, reply: AuthReply, new_account: bool) -> None:
        """Applies ma1sd's profile to the account as the policies say (see
        :mod:`rest_auth_provider.syncplan`).

        Never raises: the password was right, so a failed profile write is
        logged and the login goes on; the next login tries again.
        """
        try:
            wanted = wanted_profile(reply, self._policy)
        except Exception as e:
            logger.warning("Could not update the 3PIDs of %s: %s", user_id, _error_text(e))
            return
        if not new_account and wanted.login_display_name is not None:
            try:
                await self._sync_display_name(user_id, wanted)
            except Exception as e:
                logger.warning("Could not update the display name of %s: %s", user_id, _error_text(e))
        if wanted.threepids is not None:
            try:
                await self._sync_threepids(user_id, wanted, new_account)
            except Exception as e:
                logger.warning("Could not update the 3PIDs of %s: %s", user_id, _error_text(e))

    async def _sync_display_name(self, user_id: str, wanted: WantedProfile) -> None:
        name = wanted.login_display_name
        if self._memo.is_fresh(_DISPLAY_NAME, user_id, name):
            metrics.profile_reads_skipped.labels(kind="displayname").inc()
            return
        current = await self._compat.get_displayname(user_id)
        plan = plan_sync(wanted, AccountState(exists=True, display_name=current))
        if plan.display_name is not None:
            await self._compat.set_displayname(user_id, plan.display_name)
            metrics.profile_writes.labels(kind="displayname").inc()
            logger.info("Updated the display name of %s from %s", user_id, self._source)
        self._memo.remember(_DISPLAY_NAME, user_id, name)

    async def _sync_threepids(self, user_id: str, wanted: WantedProfile, new_account: bool) -> None:
        for item in wanted.ignored:
            if item.untrusted:
                logger.warning(
                    "Not adding %s %s to %s: %s", item.medium, printable(item.address, 100), user_id, item.reason
                )
            else:
                logger.info(
                    "Ignoring a 3PID of medium '%s' from %s for %s: only email and msisdn are kept, "
                    "and only usable addresses",
                    printable(item.medium, 40),
                    self._source,
                    user_id,
                )
        if not wanted.needs_threepids:
            return  # nothing to add, nothing may be removed: no need to read
        confirmed = wanted.threepid_set
        if self._memo.is_fresh(_THREEPIDS, user_id, confirmed):
            metrics.profile_reads_skipped.labels(kind="threepids").inc()
            return
        # An account this login has just created has no 3PIDs yet (the atomic
        # claim below still guards against a concurrent login adding one).
        stored = () if new_account else tuple(await self._compat.get_threepids(user_id))
        state = AccountState(exists=True, threepids=stored)
        plan = plan_sync(wanted, state)

        # The claim is the lookup of who holds an address: atomic, and made
        # only for the 3PIDs the account lacks.
        taken: Dict[ThreePidKey, Optional[str]] = {}
        for medium, address in plan.threepids_add:
            added, owner = await self._compat.add_threepid(user_id, medium, address)
            if added:
                metrics.profile_writes.labels(kind="threepid_add").inc()
                logger.info("Added the %s %s to %s from %s", medium, printable(address, 100), user_id, self._source)
            elif owner != user_id:
                taken[(medium, address)] = owner
                logger.warning(
                    "Not adding %s %s to %s: it already belongs to %s",
                    medium,
                    printable(address, 100),
                    user_id,
                    owner or "another account",
                )

        for medium, address in plan.threepids_remove:
            await self._compat.delete_threepid(user_id, medium, address)
            metrics.profile_writes.labels(kind="threepid_remove").inc()
            logger.info(
                "Removed the %s %s from %s: %s no longer lists it",
                medium,
                printable(address, 100),
                user_id,
                self._source,
            )
        if plan_sync(wanted, replace(state, taken=taken)).threepids_in_step:
            # A 3PID held by another account is not remembered, so that its
            # WARNING shows at every login until someone resolves it.
            self._memo.remember(_THREEPIDS, user_id, confirmed)


def _error_text(e: BaseException) -> str:
    """Returns a short description of an exception from Synapse."""
    msg = getattr(e, "msg", None)
    return "%s: %s" % (type(e).__name__, msg if msg is not None else e)
