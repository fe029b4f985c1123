"""2,000 logins over about a minute at 50 concurrent while ma1sd goes down for
2 s every 10 s. Runs on the newest release only (RAP_LOAD=1).

Every answer must be 200 (backend up, right password) or 403 (backend down),
never a 5xx; no login may outlive the timeout; afterwards every user who got
a 200 exists exactly once with the right display name and 3PIDs.
"""

import collections
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import requests

from support.fake_ma1sd import FakeMa1sd
from support.harness import SynapseServer, module_block
from support.matrix_client import MatrixClient
from tests.integration.conftest import check_started, new_password, with_backend

LOGINS = 2000
CONCURRENCY = 50
DURATION = 60.0
USERS = 400
TIMEOUT = 5.0


@pytest.fixture(scope="module")
def load_server(tmp_path_factory: Any, ma1sd: FakeMa1sd) -> Iterator[SynapseServer]:
    config = with_backend({"endpoint": ma1sd.url, "timeout": TIMEOUT, "policy": {"login": {"profile": {"name": True}}}})
    server = SynapseServer(Path(tmp_path_factory.mktemp("load")), module_block("modules", config), name="load")
    try:
        server.start()
        check_started(server)
        yield server
    finally:
        server.stop()


def test_logins_under_load_with_a_flapping_backend(load_server: SynapseServer, ma1sd: FakeMa1sd) -> None:
    users = []
    for i in range(USERS):
        localpart = "load%d_%s" % (i, new_password()[-6:])
        users.append(
            ma1sd.add_user(
                "@%s:example.org" % localpart,
                new_password(),
                "Load User %d" % i,
                emails=("%s@example.org" % localpart,),
            )
        )
    port = ma1sd.port
    stop = threading.Event()
    outages: List[float] = []

    def flap() -> None:
        while not stop.wait(8.0):
            ma1sd.stop()
            outages.append(time.monotonic())
            stop.wait(2.0)
            ma1sd.start(port=port)

    local = threading.local()
    started = time.monotonic()

    def login(i: int) -> Tuple[int, float, int, Dict[str, Any]]:
        # Paced: login i starts at i * DURATION / LOGINS seconds.
        delay = started + i * DURATION / LOGINS - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if not hasattr(local, "session"):
            local.session = requests.Session()
        user = users[i % USERS]
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user.user_id}}
        body["password"] = user.password
        t0 = time.monotonic()
        r = local.session.post(load_server.url + "/_matrix/client/r0/login", json=body, timeout=60)
        return r.status_code, time.monotonic() - t0, i % USERS, r.json() if r.status_code == 200 else {}

    flapper = threading.Thread(target=flap)
    flapper.start()
    try:
        with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
            results = list(pool.map(login, range(LOGINS)))
    finally:
        stop.set()
        flapper.join()
        if ma1sd._server is None:
            ma1sd.start(port=port)
    wall = time.monotonic() - started

    statuses = collections.Counter(status for status, _, _, _ in results)
    slowest = max(seconds for _, seconds, _, _ in results)
    print(
        "\n%d logins in %.1f s at %d concurrent, %d outages: %s; slowest %.2f s"
        % (LOGINS, wall, CONCURRENCY, len(outages), dict(statuses), slowest)
    )
    assert not [s for s in statuses if s >= 500]
    assert set(statuses) <= {200, 403}
    assert statuses[200] > LOGINS / 2 and statuses[403] > 0 and len(outages) >= 4
    assert slowest <= TIMEOUT + 1.0

    tokens: Dict[int, str] = {}
    for status, _, index, body in results:
        if status == 200:
            assert body["user_id"] == users[index].user_id
            tokens[index] = body["access_token"]
    database = sqlite3.connect("file:%s?mode=ro" % (load_server.workdir / "homeserver.db"), uri=True)
    counts = dict(database.execute("SELECT lower(name), count(*) FROM users GROUP BY lower(name)").fetchall())
    database.close()
    client = MatrixClient(load_server.url)
    for index, token in tokens.items():
        user = users[index]
        assert counts.get(user.user_id.lower()) == 1, user.user_id
        assert client.displayname(user.user_id) == user.display_name
        assert client.threepid_set(token) == {("email", user.three_pids[0]["address"])}
