"""Creating accounts and keeping profiles in step with ma1sd.

Policies (the old provider's keys and defaults):

* ``policy.registration.profile.name`` - display name from ma1sd at registration;
* ``policy.login.profile.name`` - display name refreshed on every login;
* ``policy.all.threepid.update`` - add ma1sd's email and msisdn 3PIDs;
* ``policy.all.threepid.replace`` - remove local 3PIDs ma1sd no longer lists.

What a login found already in step is remembered for
``profile_recheck_interval`` seconds (see :mod:`rest_auth_provider.memo`).
"""

import logging
from typing import Any, Optional, Set, Tuple

from rest_auth_provider import metrics
from rest_auth_provider._compat import SynapseCompat
from rest_auth_provider.config import PolicyConfig
from rest_auth_provider.memo import SyncMemo
from rest_auth_provider.response import AuthReply, canonical_threepid, untrusted_threepid_reason
from rest_auth_provider.safetext import printable

logger = logging.getLogger(__name__)

_USER_IN_USE = "M_USER_IN_USE"
_DISPLAY_NAME = "displayname"
_THREEPIDS = "threepids"


class Provisioner:
    """Registers new users and syncs display names and 3PIDs."""

    def __init__(self, api: Any, compat: SynapseCompat, policy: PolicyConfig, memo: SyncMemo, source: str = "ma1sd"):
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
        name = display_name if self._policy.registration_profile_name else None
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
        """Applies ma1sd's profile to the account as the policies say.

        Never raises: the password was right, so a failed profile write is
        logged and the login goes on; the next login tries again.
        """
        if not new_account and self._policy.login_profile_name and reply.display_name is not None:
            try:
                await self._sync_display_name(user_id, reply.display_name)
            except Exception as e:
                logger.warning("Could not update the display name of %s: %s", user_id, _error_text(e))
        if self._policy.threepid_update and reply.three_pids is not None:
            try:
                await self._sync_threepids(user_id, reply, new_account)
            except Exception as e:
                logger.warning("Could not update the 3PIDs of %s: %s", user_id, _error_text(e))

    async def _sync_display_name(self, user_id: str, name: str) -> None:
        if self._memo.is_fresh(_DISPLAY_NAME, user_id, name):
            metrics.profile_reads_skipped.labels(kind="displayname").inc()
            return
        current = await self._compat.get_displayname(user_id)
        if current != name:
            await self._compat.set_displayname(user_id, name)
            metrics.profile_writes.labels(kind="displayname").inc()
            logger.info("Updated the display name of %s from %s", user_id, self._source)
        self._memo.remember(_DISPLAY_NAME, user_id, name)

    async def _sync_threepids(self, user_id: str, reply: AuthReply, new_account: bool) -> None:
        assert reply.three_pids is not None
        wanted: Set[Tuple[str, str]] = set()
        in_step = True
        for pid in reply.three_pids:
            canonical = canonical_threepid(pid.medium, pid.address)
            if canonical is None:
                logger.info(
                    "Ignoring a 3PID of medium '%s' from %s for %s: only email and msisdn are kept, "
                    "and only usable addresses",
                    printable(pid.medium, 40),
                    self._source,
                    user_id,
                )
                continue
            untrusted = untrusted_threepid_reason(pid.medium, pid.address)
            if untrusted is not None:
                # ma1sd's list proves nothing about the mailbox: an address that
                # only becomes canonical by Unicode folding may be someone else's.
                logger.warning(
                    "Not adding %s %s to %s: %s", pid.medium, printable(pid.address, 100), user_id, untrusted
                )
                in_step = False
                continue
            wanted.add(canonical)

        if not wanted and not self._policy.threepid_replace:
            return  # nothing to add, nothing may be removed: no need to read
        confirmed = frozenset(wanted)
        if self._memo.is_fresh(_THREEPIDS, user_id, confirmed):
            metrics.profile_reads_skipped.labels(kind="threepids").inc()
            return
        # An account this login has just created has no 3PIDs yet (the atomic
        # claim below still guards against a concurrent login adding one).
        stored = [] if new_account else await self._compat.get_threepids(user_id)
        have = {canonical_threepid(m, a) or (m, a): (m, a) for m, a in stored}

        for medium, address in sorted(wanted - set(have)):
            added, owner = await self._compat.add_threepid(user_id, medium, address)
            if added:
                metrics.profile_writes.labels(kind="threepid_add").inc()
                logger.info("Added the %s %s to %s from %s", medium, printable(address, 100), user_id, self._source)
            elif owner != user_id:
                logger.warning(
                    "Not adding %s %s to %s: it already belongs to %s",
                    medium,
                    printable(address, 100),
                    user_id,
                    owner or "another account",
                )
                in_step = False

        if self._policy.threepid_replace:
            for key in sorted(set(have) - wanted):
                medium, address = have[key]
                await self._compat.delete_threepid(user_id, medium, address)
                metrics.profile_writes.labels(kind="threepid_remove").inc()
                logger.info(
                    "Removed the %s %s from %s: %s no longer lists it",
                    medium,
                    printable(address, 100),
                    user_id,
                    self._source,
                )
        if in_step:
            # A 3PID held by another account is not remembered, so that its
            # WARNING shows at every login until someone resolves it.
            self._memo.remember(_THREEPIDS, user_id, confirmed)


def _error_text(e: BaseException) -> str:
    """Returns a short description of an exception from Synapse."""
    msg = getattr(e, "msg", None)
    return "%s: %s" % (type(e).__name__, msg if msg is not None else e)
