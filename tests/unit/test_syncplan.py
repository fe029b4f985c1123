"""The sync plan (rest_auth_provider.syncplan): properties checked over every
combination of small domains (policies, replies, account states), then a few
examples."""

import dataclasses
import itertools
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

from rest_auth_provider.config import PolicyConfig
from rest_auth_provider.response import AuthReply, ThreePid, canonical_threepid
from rest_auth_provider.syncplan import (
    MEDIUM_NOT_KEPT,
    NOT_SENT,
    POLICY_OFF,
    UNREAD,
    UNUSABLE_ADDRESS,
    AccountState,
    SyncPlan,
    WantedProfile,
    plan_sync,
    wanted_profile,
)

Key = Tuple[str, str]

ANN = ("email", "ann@example.org")
BOB = ("email", "bob@example.org")
PHONE = ("msisdn", "447700900123")
CAROL = ("email", "carol@example.org")
SAM = ("email", "sam@example.org")  # what the untrusted "ſam@example.org" folds to

# What ma1sd may list: two spellings of ANN, BOB, a phone number written for
# humans, a look-alike address, an unusable one and a medium Synapse does not keep.
LISTED = (
    ThreePid("email", "ann@example.org"),
    ThreePid("email", "Ann@Example.ORG"),
    ThreePid("email", "bob@example.org"),
    ThreePid("msisdn", "+44 7700 900123"),
    ThreePid("email", "\u017fam@example.org"),
    ThreePid("email", "not-an-email"),
    ThreePid("ldap_uid", "ann"),
)
# What Synapse may hold: canonical forms, BOB as an older spelling, and CAROL
# (never listed).
STORED = (ANN, ("email", "Bob@example.org"), PHONE, CAROL)
OTHER = "@other:example.org"
NAMES = (None, "Ann", "Bob")
DEFAULT_NAME = "(Synapse's default: the localpart)"


def policies() -> Iterator[PolicyConfig]:
    """Yields every combination of the policy switches."""
    for flags in itertools.product((False, True), repeat=4):
        yield PolicyConfig(
            registration_profile_name=flags[0],
            login_profile_name=flags[1],
            threepid_update=flags[2],
            threepid_replace=flags[3],
        )


def listings() -> Iterator[Optional[Tuple[ThreePid, ...]]]:
    """Yields no list at all, then every list of up to three entries of LISTED."""
    yield None
    for size in range(4):
        yield from itertools.combinations(LISTED, size)


def stored_sets() -> Iterator[Tuple[Key, ...]]:
    for size in range(len(STORED) + 1):
        yield from itertools.combinations(STORED, size)


def taken_maps() -> Iterator[Dict[Key, Optional[str]]]:
    """Yields which of ANN, BOB and PHONE another account holds (named or not)."""
    for size in range(4):
        for keys in itertools.combinations((ANN, BOB, PHONE), size):
            yield {key: (OTHER if i % 2 == 0 else None) for i, key in enumerate(keys)}


def canonical(stored: Tuple[Key, ...]) -> Set[Key]:
    return {canonical_threepid(m, a) or (m, a) for m, a in stored}


def held(state: AccountState) -> Tuple[Key, ...]:
    """Returns the 3PIDs the account holds as stored (none before it exists)."""
    assert state.threepids is not UNREAD or not state.exists
    return state.threepids if state.exists and state.threepids is not UNREAD else ()


def trusted_keys(listing: Optional[Tuple[ThreePid, ...]]) -> Set[Key]:
    """Returns the canonical 3PIDs of ``listing`` that may be stored (by this test's own rule)."""
    keys = set()
    for pid in listing or ():
        key = canonical_threepid(pid.medium, pid.address)
        if key is not None and key != SAM:
            keys.add(key)
    return keys


def apply(state: AccountState, plan: SyncPlan) -> AccountState:
    """Returns the state after ``plan``, as Synapse would hold it."""
    if plan.register:
        name: Optional[str] = plan.display_name if plan.display_name is not None else DEFAULT_NAME
        stored: List[Key] = []
    else:
        assert state.display_name is not UNREAD and state.threepids is not UNREAD
        name = plan.display_name if plan.display_name is not None else state.display_name
        stored = [pid for pid in state.threepids if pid not in plan.threepids_remove]
    stored += list(plan.threepids_add)
    return AccountState(exists=True, display_name=name, threepids=tuple(stored), taken=state.taken)


def states() -> Iterator[AccountState]:
    yield AccountState(exists=False)
    for stored in stored_sets():
        for taken in taken_maps():
            yield AccountState(exists=True, display_name="Ann", threepids=stored, taken=taken)


@pytest.mark.parametrize("update, replace", [(False, False), (True, False), (True, True), (False, True)])
def test_threepid_properties_over_every_small_case(update: bool, replace: bool) -> None:
    policy = PolicyConfig(threepid_update=update, threepid_replace=replace)
    checked = 0
    for listing in listings():
        wanted = wanted_profile(AuthReply(True, "Ann", listing), policy)
        synced = update and listing is not None
        want = trusted_keys(listing) if synced else set()
        assert wanted.threepid_set == want
        assert (wanted.threepids is not None) == synced
        assert wanted.replace == (synced and replace)
        # Every listed entry is either wanted or ignored, never both.
        if synced:
            assert len(wanted.ignored) == sum(
                1 for p in listing or () if canonical_threepid(p.medium, p.address) in (None, SAM)
            )
        for state in states():
            plan = plan_sync(wanted, state)
            have = canonical(held(state))
            added = set(plan.threepids_add)
            # Only wanted, missing 3PIDs are added; never one another account holds.
            assert added <= want - have
            assert not added & set(state.taken)
            assert {key for key, _ in plan.threepids_taken} == (want - have) & set(state.taken)
            assert added | {key for key, _ in plan.threepids_taken} == want - have
            assert list(plan.threepids_add) == sorted(plan.threepids_add)
            # Removal only with the policy and an explicit list, only of held 3PIDs ma1sd no longer lists.
            if not (synced and replace):
                assert plan.threepids_remove == ()
            assert set(plan.threepids_remove) <= set(held(state))
            assert not canonical(plan.threepids_remove) & want
            # Applied, the account holds what the policy wants.
            after = canonical(held(apply(state, plan)))
            if synced and replace:
                assert after == want - (set(state.taken) - have)
            else:
                assert after == have | (want - set(state.taken))
            # Once applied, nothing is left to do, and the taken ones are still reported.
            again = plan_sync(wanted, apply(state, plan))
            assert again.empty
            assert again.threepids_taken == plan.threepids_taken
            untrusted = any(i.untrusted for i in wanted.ignored)
            assert plan.threepids_in_step == (not plan.threepids_taken and not untrusted)
            checked += 1
    assert checked == 65 * (1 + 16 * 8)


def test_display_name_properties_over_every_small_case() -> None:
    for policy in policies():
        for sent in NAMES:
            wanted = wanted_profile(AuthReply(True, sent, ()), policy)
            assert wanted.display_name == sent
            for current in NAMES:
                for exists in (False, True):
                    state = AccountState(exists=exists, display_name=current, threepids=())
                    plan = plan_sync(wanted, state)
                    after = apply(state, plan)
                    assert plan.register == (not exists)
                    if not exists:
                        expected = sent if policy.registration_profile_name and sent is not None else DEFAULT_NAME
                        assert after.display_name == expected
                    elif policy.login_profile_name and sent is not None:
                        assert after.display_name == sent
                        assert (plan.display_name is None) == (current == sent)  # no write when in step
                    else:
                        assert plan.display_name is None
                    if exists:
                        assert plan_sync(wanted, after).empty
                    else:
                        # A new account gets the login name, if registration set another, at its next login.
                        second = plan_sync(wanted, after)
                        assert plan_sync(wanted, apply(after, second)).empty


def test_unread_parts_are_not_planned() -> None:
    policy = PolicyConfig(login_profile_name=True, threepid_replace=True)
    wanted = wanted_profile(AuthReply(True, "Ann", (ThreePid("email", "ann@example.org"),)), policy)
    plan = plan_sync(wanted, AccountState(exists=True))
    assert plan.empty and plan.threepids_taken == ()
    names_only = plan_sync(wanted, AccountState(exists=True, display_name="Old"))
    assert (names_only.display_name, names_only.threepids_add) == ("Ann", ())
    threepids_only = plan_sync(wanted, AccountState(exists=True, threepids=(CAROL,)))
    assert (threepids_only.display_name, threepids_only.threepids_add) == (None, (ANN,))
    assert threepids_only.threepids_remove == (CAROL,)


# -- examples ----------------------------------------------------------------------------------


def test_a_first_login_registers_with_the_name_and_adds_every_trusted_3pid() -> None:
    reply = AuthReply(True, "Ann A", LISTED)
    wanted = wanted_profile(reply, PolicyConfig())
    assert wanted.threepids == (ANN, BOB, PHONE)  # the reply's order, each once
    assert [(i.medium, i.address, i.reason) for i in wanted.ignored] == [
        ("email", "\u017fam@example.org", "folds to sam@example.org, which is not the address as sent"),
        ("email", "not-an-email", UNUSABLE_ADDRESS),
        ("ldap_uid", "ann", MEDIUM_NOT_KEPT),
    ]
    assert [i.untrusted for i in wanted.ignored] == [True, False, False]
    plan = plan_sync(wanted, AccountState(exists=False))
    assert (plan.register, plan.display_name) == (True, "Ann A")
    assert plan.threepids_add == (ANN, BOB, PHONE)
    assert plan.threepids_remove == ()
    assert not plan.threepids_in_step  # the look-alike address keeps it out of step


def test_why_nothing_is_set() -> None:
    off = wanted_profile(AuthReply(True, "Ann", None), PolicyConfig(registration_profile_name=False))
    assert (off.registration_display_name, off.registration_skipped) == (None, POLICY_OFF)
    assert (off.login_display_name, off.login_skipped) == (None, POLICY_OFF)
    assert (off.threepids, off.threepids_skipped) == (None, NOT_SENT)
    none_sent = wanted_profile(
        AuthReply(True, None, (ThreePid("email", "a@b.c"),)), PolicyConfig(threepid_update=False)
    )
    assert (none_sent.registration_display_name, none_sent.registration_skipped) == (None, NOT_SENT)
    assert (none_sent.threepids, none_sent.threepids_skipped) == (None, POLICY_OFF)
    assert not none_sent.needs_threepids


def test_replace_with_an_empty_list_removes_everything_but_no_list_removes_nothing() -> None:
    policy = PolicyConfig(threepid_replace=True)
    state = AccountState(exists=True, display_name=None, threepids=(CAROL, PHONE))
    empty = wanted_profile(AuthReply(True, None, ()), policy)
    assert empty.needs_threepids
    assert plan_sync(empty, state).threepids_remove == (CAROL, PHONE)
    missing = wanted_profile(AuthReply(True, None, None), policy)
    assert not missing.needs_threepids
    assert plan_sync(missing, state).empty


def test_an_older_spelling_of_a_listed_address_is_neither_added_nor_removed() -> None:
    wanted = wanted_profile(
        AuthReply(True, None, (ThreePid("email", "bob@example.org"),)), PolicyConfig(threepid_replace=True)
    )
    plan = plan_sync(wanted, AccountState(exists=True, threepids=(("email", "Bob@example.org"), CAROL)))
    assert (plan.threepids_add, plan.threepids_remove) == ((), (CAROL,))


def test_an_address_held_by_another_account_is_reported_not_added() -> None:
    wanted = wanted_profile(AuthReply(True, None, (ThreePid("email", "ann@example.org"),)), PolicyConfig())
    plan = plan_sync(wanted, AccountState(exists=True, threepids=(), taken={ANN: OTHER}))
    assert (plan.threepids_add, plan.threepids_taken) == ((), ((ANN, OTHER),))
    assert not plan.threepids_in_step
    assert isinstance(wanted, WantedProfile)


def test_the_plan_is_frozen() -> None:
    plan = plan_sync(wanted_profile(AuthReply(True, None, None), PolicyConfig()), AccountState(exists=False))
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.register = False  # type: ignore[misc]
    assert plan.register
