"""Counting failed logins per account and per 3PID, whatever spelling was typed.

Synapse limits failed attempts per identifier *as typed*: ``+44 7700 900456``
and ``447700900456`` are two keys to it, although they name one phone number
and so one account. This limiter counts every password the backend refused
against the resolved account (and, for a first login by 3PID, the canonical
address), with the limits of Synapse's own ``rc_login.failed_attempts``, so
that no spelling buys an attacker more password checks (or an LDAP lockout of
someone else). It is a leaky bucket like Synapse's: ``burst_count`` failures,
then one more every ``1 / per_second`` seconds. Nothing here needs Synapse.
"""

import time
from collections import OrderedDict
from typing import Callable, Hashable, Tuple

DEFAULT_MAX_KEYS = 100000


class FailureLimiter:
    """Remembers recent failures per key; per process, like Synapse's limiter."""

    def __init__(
        self,
        per_second: float,
        burst_count: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = DEFAULT_MAX_KEYS,
    ):
        self._per_second = max(per_second, 0.0)
        self._burst_count = burst_count
        self._clock = clock
        self._max_keys = max_keys
        self._levels: OrderedDict[Hashable, Tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._levels)

    def _level(self, key: Hashable, now: float) -> float:
        entry = self._levels.get(key)
        if entry is None:
            return 0.0
        level, at = entry
        return max(0.0, level - (now - at) * self._per_second)

    def allows(self, key: Hashable) -> bool:
        """Returns True when one more attempt for ``key`` is within the limit."""
        return self._level(key, self._clock()) + 1 <= self._burst_count

    def record_failure(self, key: Hashable) -> None:
        """Counts one failed attempt for ``key``."""
        now = self._clock()
        level = self._level(key, now) + 1
        self._levels.pop(key, None)
        self._levels[key] = (level, now)
        if len(self._levels) > self._max_keys:
            # Forget whoever has leaked back to zero first; only then the
            # oldest, so that flooding other keys frees no one quickly.
            for old in [k for k in self._levels if self._level(k, now) <= 0.0]:
                del self._levels[old]
            while len(self._levels) > self._max_keys:
                self._levels.popitem(last=False)
