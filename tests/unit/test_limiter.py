"""The failed-login limiter, on a controlled clock."""

from typing import List

from rest_auth_provider.limiter import FailureLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refused() -> None:
    clock = Clock()
    limiter = FailureLimiter(per_second=0.1, burst_count=3, clock=clock)
    outcomes: List[bool] = []
    for _ in range(4):
        outcomes.append(limiter.allows("k"))
        limiter.record_failure("k")
    assert outcomes == [True, True, True, False]


def test_one_more_attempt_after_one_over_per_second() -> None:
    clock = Clock()
    limiter = FailureLimiter(per_second=0.1, burst_count=3, clock=clock)
    for _ in range(3):
        limiter.record_failure("k")
    assert not limiter.allows("k")
    clock.now += 9.9
    assert not limiter.allows("k")
    clock.now += 0.1
    assert limiter.allows("k")
    limiter.record_failure("k")
    assert not limiter.allows("k")


def test_keys_are_independent() -> None:
    limiter = FailureLimiter(per_second=0.1, burst_count=1, clock=Clock())
    limiter.record_failure(("user", "@a:x"))
    assert not limiter.allows(("user", "@a:x"))
    assert limiter.allows(("user", "@b:x"))
    assert limiter.allows(("3pid", "msisdn", "447700900456"))


def test_zero_rate_never_leaks() -> None:
    clock = Clock()
    limiter = FailureLimiter(per_second=0, burst_count=2, clock=clock)
    limiter.record_failure("k")
    limiter.record_failure("k")
    clock.now += 10**9
    assert not limiter.allows("k")


def test_full_table_forgets_leaked_keys_before_a_counting_one() -> None:
    clock = Clock()
    limiter = FailureLimiter(per_second=1.0, burst_count=1, clock=clock, max_keys=3)
    for _ in range(3):
        limiter.record_failure("attacked")  # the oldest entry, still counting below
    clock.now += 0.1
    limiter.record_failure("leaked")
    clock.now += 0.9
    limiter.record_failure("recent")
    clock.now += 0.2  # "leaked" is back to zero; "attacked" (1.8) and "recent" (0.8) are not
    limiter.record_failure("new")
    assert len(limiter) == 3
    assert not limiter.allows("attacked")
    assert not limiter.allows("recent") and not limiter.allows("new")


def test_full_table_drops_the_oldest_when_nothing_has_leaked() -> None:
    limiter = FailureLimiter(per_second=0.0, burst_count=1, clock=Clock(), max_keys=2)
    for key in ("a", "b", "c"):
        limiter.record_failure(key)
    assert len(limiter) == 2
    assert limiter.allows("a")
    assert not limiter.allows("c")
