"""The per-process memory of accounts found in step with ma1sd."""

from typing import List

from rest_auth_provider.memo import SyncMemo


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_remembered_value_is_fresh_until_the_interval_ends() -> None:
    clock = Clock()
    memo = SyncMemo(300, clock=clock)
    memo.remember("threepids", "@a:x", frozenset({("email", "a@x")}))
    clock.now += 299.9
    assert memo.is_fresh("threepids", "@a:x", frozenset({("email", "a@x")}))
    clock.now += 0.1
    assert not memo.is_fresh("threepids", "@a:x", frozenset({("email", "a@x")}))
    # An expired entry is gone, not revived by the clock.
    clock.now -= 10
    assert not memo.is_fresh("threepids", "@a:x", frozenset({("email", "a@x")}))


def test_a_different_value_is_never_fresh_and_drops_the_entry() -> None:
    memo = SyncMemo(300, clock=Clock())
    memo.remember("displayname", "@a:x", "Alice")
    assert not memo.is_fresh("displayname", "@a:x", "Alice Smith")
    assert not memo.is_fresh("displayname", "@a:x", "Alice")
    assert len(memo) == 0


def test_kinds_and_users_are_separate() -> None:
    memo = SyncMemo(300, clock=Clock())
    memo.remember("displayname", "@a:x", "A")
    assert not memo.is_fresh("threepids", "@a:x", "A")
    assert not memo.is_fresh("displayname", "@b:x", "A")
    assert memo.is_fresh("displayname", "@a:x", "A")


def test_interval_zero_remembers_nothing() -> None:
    memo = SyncMemo(0, clock=Clock())
    memo.remember("displayname", "@a:x", "A")
    assert len(memo) == 0
    assert not memo.is_fresh("displayname", "@a:x", "A")


def test_forget() -> None:
    memo = SyncMemo(300, clock=Clock())
    memo.remember("displayname", "@a:x", "A")
    memo.forget("displayname", "@a:x")
    memo.forget("displayname", "@never:x")
    assert not memo.is_fresh("displayname", "@a:x", "A")


def test_size_is_bounded_and_the_oldest_entry_goes_first() -> None:
    clock = Clock()
    memo = SyncMemo(300, max_entries=3, clock=clock)
    users: List[str] = ["@u%d:x" % i for i in range(5)]
    for user in users:
        clock.now += 1
        memo.remember("displayname", user, "N")
    assert len(memo) == 3
    assert [memo.is_fresh("displayname", u, "N") for u in users] == [False, False, True, True, True]
    # Remembering again makes an entry the newest.
    memo.remember("displayname", users[2], "N")
    memo.remember("displayname", "@new:x", "N")
    assert memo.is_fresh("displayname", users[2], "N")
    assert not memo.is_fresh("displayname", users[3], "N")
