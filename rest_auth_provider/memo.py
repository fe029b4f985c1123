"""A per-process memory of accounts found already in step with ma1sd.

Reading a user's display name or 3PIDs costs Synapse a database transaction.
When a login has just confirmed that the account matches what ma1sd says,
the next logins of that user *on the same process* that get the very same
answer from ma1sd can skip the read for ``profile_recheck_interval`` seconds.
A different answer from ma1sd is never skipped, so ma1sd's changes reach the
account at once; only changes made inside Synapse behind the module's back
(a user deleting a 3PID ma1sd lists, say) wait up to that interval. Synapse
drops the 3PIDs of a deactivated account, so every process forgets a user
when the account is deactivated or reactivated anywhere (the provider wires
:meth:`SyncMemo.forget_user` to Synapse's replicated notice, and uses no
memory at all on a Synapse that cannot give that notice).
"""

import time
from collections import OrderedDict
from typing import Callable, Hashable, Optional, Tuple

DEFAULT_MAX_ENTRIES = 10000

_Key = Tuple[str, str]


class SyncMemo:
    """Remembers, per (kind, user ID), the last value found in step and when."""

    def __init__(
        self,
        interval: float,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._interval = interval
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[_Key, Tuple[Hashable, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def is_fresh(self, kind: str, user_id: str, value: Hashable) -> bool:
        """Returns True when ``value`` was found in step for this user less than
        ``interval`` seconds ago; False otherwise (also when the interval is 0)."""
        entry = self._entries.get((kind, user_id))
        if entry is None:
            return False
        remembered, at = entry
        if remembered != value or self._clock() - at >= self._interval:
            del self._entries[(kind, user_id)]
            return False
        return True

    def remember(self, kind: str, user_id: str, value: Hashable) -> None:
        """Records that the account now holds ``value``; forgets the oldest
        entry when full. Does nothing when the interval is 0."""
        if self._interval <= 0:
            return
        key = (kind, user_id)
        self._entries.pop(key, None)
        self._entries[key] = (value, self._clock())
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def forget(self, kind: str, user_id: str) -> None:
        """Drops what is known about this user, so the next login reads again."""
        self._entries.pop((kind, user_id), None)

    def forget_user(self, user_id: Optional[str]) -> None:
        """Drops everything known about ``user_id``; about everyone when None."""
        if user_id is None:
            self._entries.clear()
            return
        for key in [k for k in self._entries if k[1] == user_id]:
            del self._entries[key]
