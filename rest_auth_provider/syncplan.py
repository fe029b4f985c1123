"""What a login changes in a Synapse account, decided in one place.

Two pure steps (no I/O, no Synapse, no metrics), so that the reads they need
can be skipped when the first step shows nothing could change:

1. :func:`wanted_profile`: what ma1sd's reply asks for under the policy (the
   ``policy.*`` keys): the display name to set at registration and at later
   logins, the 3PIDs wanted (as Synapse stores them) and those ignored, and
   whether local 3PIDs not listed are removed. ``check --user`` prints this:
   it cannot read Synapse's database.
2. :func:`plan_sync`: the changes to make to an account in a given state:
   register or not, the display name to set, the 3PIDs to add, to remove, and
   those skipped because another account holds them.

:class:`rest_auth_provider.provisioning.Provisioner` reads the state and
applies the plan.
"""

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, FrozenSet, List, Mapping, Optional, Tuple, Union

from rest_auth_provider.response import SUPPORTED_MEDIA, AuthReply, canonical_threepid, untrusted_threepid_reason

#: (medium, address): a 3PID as Synapse stores it, or as read from Synapse.
ThreePidKey = Tuple[str, str]

# Why a display name or the 3PID list is left alone.
POLICY_OFF = "policy"
NOT_SENT = "not sent"

# Why a listed 3PID is ignored, besides untrusted_threepid_reason's texts.
MEDIUM_NOT_KEPT = "only email and msisdn are kept"
UNUSABLE_ADDRESS = "unusable address"

if TYPE_CHECKING:
    from rest_auth_provider.config import PolicyConfig


class Unread(enum.Enum):
    """The type of :data:`UNREAD`."""

    UNREAD = "unread"


#: A part of the account's state that was not read: that part is not planned.
UNREAD = Unread.UNREAD


@dataclass(frozen=True)
class Ignored:
    """A 3PID of the reply that is never stored, as sent, and why.

    ``untrusted`` is True for a usable address whose text is not to be
    trusted (a login logs a WARNING for it), False for a medium Synapse does
    not keep or an unusable address."""

    medium: str
    address: str
    reason: str
    untrusted: bool


@dataclass(frozen=True)
class WantedProfile:
    """What a reply asks for under the policy.

    A display name is None when none is set; ``*_skipped`` then says why
    (:data:`POLICY_OFF` or :data:`NOT_SENT`), and is None when one is set.
    ``threepids`` is None when 3PIDs are not synced at all (``threepids_skipped``
    says why); else the wanted 3PIDs as Synapse stores them, in the reply's
    order without repeats.
    """

    display_name: Optional[str]
    registration_display_name: Optional[str]
    registration_skipped: Optional[str]
    login_display_name: Optional[str]
    login_skipped: Optional[str]
    threepids: Optional[Tuple[ThreePidKey, ...]]
    threepids_skipped: Optional[str]
    ignored: Tuple[Ignored, ...]
    replace: bool

    @property
    def threepid_set(self) -> FrozenSet[ThreePidKey]:
        """Returns the wanted 3PIDs as a set (empty when they are not synced)."""
        return frozenset(self.threepids or ())

    @property
    def needs_threepids(self) -> bool:
        """Returns True when the account's 3PIDs must be read: some are
        wanted, or local ones may be removed."""
        return self.threepids is not None and (bool(self.threepids) or self.replace)

    @property
    def all_trusted(self) -> bool:
        """Returns True when no listed address was refused as untrusted."""
        return not any(item.untrusted for item in self.ignored)


@dataclass(frozen=True)
class AccountState:
    """What Synapse holds for the user, as far as it was read.

    ``display_name`` and ``threepids`` (as stored) are :data:`UNREAD` when not
    read: that part is then not planned. ``taken`` maps wanted 3PIDs that
    another account holds to that account's ID (None when it could not be
    named); a 3PID not in it is, as far as is known, nobody else's.
    """

    exists: bool
    display_name: Union[Optional[str], Unread] = UNREAD
    threepids: Union[Tuple[ThreePidKey, ...], Unread] = UNREAD
    taken: Mapping[ThreePidKey, Optional[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class SyncPlan:
    """The changes a login makes to an account.

    ``display_name`` is the name to register the account with when
    ``register``, else the one to set now; None when none is set.
    ``threepids_add`` are canonical, sorted; ``threepids_remove`` are as
    stored, in the order of their canonical forms; ``threepids_taken`` are the
    wanted 3PIDs another account holds, with its ID (None when unnamed).
    """

    register: bool
    display_name: Optional[str]
    threepids_add: Tuple[ThreePidKey, ...]
    threepids_remove: Tuple[ThreePidKey, ...]
    threepids_taken: Tuple[Tuple[ThreePidKey, Optional[str]], ...]
    threepids_ignored: Tuple[Ignored, ...]

    @property
    def empty(self) -> bool:
        """Returns True when the plan changes nothing."""
        return not (self.register or self.display_name is not None or self.threepids_add or self.threepids_remove)

    @property
    def threepids_in_step(self) -> bool:
        """Returns True when, once applied, the account holds every 3PID the
        reply listed: none refused as untrusted, none held by another account."""
        return not self.threepids_taken and not any(item.untrusted for item in self.threepids_ignored)


def _display_names(reply: AuthReply, policy: "PolicyConfig") -> Tuple[Tuple[Optional[str], Optional[str]], ...]:
    """Returns ((name, skipped) at registration, (name, skipped) at later logins)."""
    name = reply.display_name
    result: List[Tuple[Optional[str], Optional[str]]] = []
    for enabled in (policy.registration_profile_name, policy.login_profile_name):
        if not enabled:
            result.append((None, POLICY_OFF))
        elif name is None:
            result.append((None, NOT_SENT))
        else:
            result.append((name, None))
    return tuple(result)


def wanted_profile(reply: AuthReply, policy: "PolicyConfig") -> WantedProfile:
    """Returns what ``reply`` (accepted credentials) asks for under ``policy``."""
    (registration, registration_skipped), (login, login_skipped) = _display_names(reply, policy)
    threepids: Optional[Tuple[ThreePidKey, ...]] = None
    skipped: Optional[str] = None
    ignored: List[Ignored] = []
    if not policy.threepid_update:
        skipped = POLICY_OFF
    elif reply.three_pids is None:
        skipped = NOT_SENT
    else:
        wanted: List[ThreePidKey] = []
        for pid in reply.three_pids:
            canonical = canonical_threepid(pid.medium, pid.address)
            if canonical is None:
                reason = UNUSABLE_ADDRESS if pid.medium.lower() in SUPPORTED_MEDIA else MEDIUM_NOT_KEPT
                ignored.append(Ignored(pid.medium, pid.address, reason, untrusted=False))
                continue
            # ma1sd's list proves nothing about the mailbox: an address that
            # only becomes canonical by Unicode folding may be someone else's.
            untrusted = untrusted_threepid_reason(pid.medium, pid.address)
            if untrusted is not None:
                ignored.append(Ignored(pid.medium, pid.address, untrusted, untrusted=True))
            elif canonical not in wanted:
                wanted.append(canonical)
        threepids = tuple(wanted)
    return WantedProfile(
        display_name=reply.display_name,
        registration_display_name=registration,
        registration_skipped=registration_skipped,
        login_display_name=login,
        login_skipped=login_skipped,
        threepids=threepids,
        threepids_skipped=skipped,
        ignored=tuple(ignored),
        replace=policy.threepid_replace and threepids is not None,
    )


def plan_sync(wanted: WantedProfile, state: AccountState) -> SyncPlan:
    """Returns the changes that bring an account in ``state`` to ``wanted``.

    A missing account is registered (with the registration display name) and
    holds no 3PIDs yet; an existing one gets the login display name when it
    differs. A 3PID another account holds is never added; local 3PIDs are
    removed only with ``replace`` (an explicit list under
    ``policy.all.threepid.replace``). Parts of the state left UNREAD are not
    planned.
    """
    if not state.exists:
        display_name = wanted.registration_display_name
        stored: Union[Tuple[ThreePidKey, ...], Unread] = ()
    else:
        display_name = None
        current = state.display_name
        if wanted.login_display_name is not None and current is not UNREAD and current != wanted.login_display_name:
            display_name = wanted.login_display_name
        stored = state.threepids

    add: Tuple[ThreePidKey, ...] = ()
    remove: Tuple[ThreePidKey, ...] = ()
    taken: Tuple[Tuple[ThreePidKey, Optional[str]], ...] = ()
    if wanted.threepids is not None and not isinstance(stored, Unread):
        want = wanted.threepid_set
        have = {canonical_threepid(m, a) or (m, a): (m, a) for m, a in stored}
        missing = sorted(want - set(have))
        add = tuple(key for key in missing if key not in state.taken)
        taken = tuple((key, state.taken[key]) for key in missing if key in state.taken)
        if wanted.replace:
            remove = tuple(have[key] for key in sorted(set(have) - want))
    return SyncPlan(
        register=not state.exists,
        display_name=display_name,
        threepids_add=add,
        threepids_remove=remove,
        threepids_taken=taken,
        threepids_ignored=wanted.ignored,
    )
