"""What only a REST identity store can answer, through a real Synapse
(RAP_BACKEND=rest, in the tox environments that set RAP_HOSTILE=1).

Each case of REST_FAULTS (test_hostile.py, where docs/reliability.md's
check finds it) is a backend error: 403 within the timeout plus 1 s, no
account created, profile unchanged, one WARNING per login naming the cause,
never "rejected the credentials". A separate module so that importing
test_hostile.py (the docs check does) needs no pytest marker.
"""

import pytest

from tests.integration.conftest import Homeserver
from tests.integration.test_hostile import REST_FAULTS, FailClosed

pytestmark = pytest.mark.backend("rest")


@pytest.mark.parametrize("case", sorted(REST_FAULTS))
def test_rest_store_answer_fails_closed(case: str, sync_hs: Homeserver) -> None:
    """Each is a backend error (WARNING), never "rejected the credentials"."""
    rest = REST_FAULTS[case]
    store = sync_hs.rest_store
    setup = FailClosed(sync_hs)
    store.fault = rest.fault
    if rest.store_id != "as usual":
        for user in setup.users:
            store.id_override[user.user_id.lower()] = None if rest.store_id == "no id" else rest.store_id
    domain = store.domain
    if rest.domain is not None:
        store.domain = rest.domain
    try:
        lines = setup.check(case, rest.cause, rest.detail)
    finally:
        store.domain = domain
    assert not any("rejected the credentials" in line for line in lines), (case, lines)
    assert store.password_checks(), case
