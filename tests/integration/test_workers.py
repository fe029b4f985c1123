"""The provider inside Synapse workers, on PostgreSQL with Redis replication.

Login is served by generic workers: registration goes to the main process
over replication, profile and 3PID writes happen from the worker. Runs in the
tox environments that set RAP_WORKERS=1.
"""

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from support.fake_ma1sd import FakeMa1sd
from support.harness import _template, supports_modules_style, synapse_version
from support.matrix_client import logins_at_once, wait_for
from support.services import PostgresCluster, RedisServer
from tests.integration.conftest import TIMEOUT, assert_backend, check_started, new_password, with_backend
from tests.integration.topology import WorkerTopology

SERVER = "example.org"


@pytest.fixture(scope="module")
def topology(
    tmp_path_factory: Any, ma1sd: FakeMa1sd, postgres: PostgresCluster, redis: RedisServer
) -> Iterator[WorkerTopology]:
    style = "modules" if supports_modules_style() else "password_providers"
    config = with_backend(
        {
            "endpoint": ma1sd.url,
            "timeout": TIMEOUT,
            "policy": {"login": {"profile": {"name": True}}, "all": {"threepid": {"replace": True}}},
        }
    )
    topo = WorkerTopology(Path(tmp_path_factory.mktemp("workers")), style, config, postgres, redis).start()
    try:
        for server in topo.processes():
            check_started(server)
        yield topo
    finally:
        topo.stop()


def new_user(ma1sd: FakeMa1sd, prefix: str, **kwargs: Any) -> Any:
    localpart = "%s%s" % (prefix, new_password()[-8:])
    return ma1sd.add_user("@%s:%s" % (localpart, SERVER), new_password(), **kwargs)


def test_module_is_loaded_on_every_process(topology: WorkerTopology) -> None:
    for server in topology.processes():
        kind = "main" if server is topology.main else "worker"
        assert "(%s process)" % kind in server.log_text(), server.name
        assert_backend(server)


def test_first_login_through_a_worker_registers_and_provisions(topology: WorkerTopology, ma1sd: FakeMa1sd) -> None:
    user = new_user(ma1sd, "wfirst", display_name="Worker First", emails=("WFirst@Example.org",))
    worker_a, worker_b = topology.worker_clients

    body = worker_a.login_ok(
        user.user_id.upper().replace("@WFIRST", "@WFirst").replace(":EXAMPLE.ORG", ":example.org"), user.password
    )

    assert body["user_id"] == user.user_id
    assert "Created the account %s" % user.user_id in topology.workers[0].log_text()
    assert topology.main_client.displayname(user.user_id) == "Worker First"
    assert worker_b.threepid_set(body["access_token"]) == {("email", "wfirst@example.org")}
    assert topology.count_users(user.user_id[1:].split(":")[0]) == 1


def test_other_worker_finds_the_account_and_name_changes_reach_rooms(
    topology: WorkerTopology, ma1sd: FakeMa1sd
) -> None:
    user = new_user(ma1sd, "wname", display_name="Name Before")
    worker_a, worker_b = topology.worker_clients
    token = worker_a.login_ok(user.user_id, user.password)["access_token"]
    room_id = topology.main_client.create_room(token)

    user.display_name = "Name After"
    body = worker_b.login_ok(user.user_id.split(":")[0][1:], user.password)

    assert body["user_id"] == user.user_id
    assert "Updated the display name of %s" % user.user_id in topology.workers[1].log_text()
    assert wait_for(lambda: topology.main_client.displayname(user.user_id) == "Name After")
    assert wait_for(
        lambda: topology.main_client.member_event(token, room_id, user.user_id).get("displayname") == "Name After"
    ), topology.main_client.member_event(token, room_id, user.user_id)
    assert topology.count_users(user.user_id[1:].split(":")[0]) == 1


def test_replace_removes_a_3pid_when_a_worker_serves_the_login(topology: WorkerTopology, ma1sd: FakeMa1sd) -> None:
    user = new_user(ma1sd, "wpid", emails=("keep.w@example.org", "drop.w@example.org"), msisdns=("+1 555 0100",))
    worker_a, worker_b = topology.worker_clients
    token = worker_a.login_ok(user.user_id, user.password)["access_token"]
    assert worker_a.threepid_set(token) == {
        ("email", "keep.w@example.org"),
        ("email", "drop.w@example.org"),
        ("msisdn", "15550100"),
    }

    user.three_pids = [{"medium": "email", "address": "keep.w@example.org"}]
    worker_b.login_ok(user.user_id, user.password)

    assert worker_a.threepid_set(token) == {("email", "keep.w@example.org")}
    log = topology.workers[1].log_text()
    assert "Removed the email drop.w@example.org from %s" % user.user_id in log
    # The worker-safe path: Synapse's handler only from 1.135, before that the store.
    expected = "AuthHandler.delete_local_threepid" if synapse_version() >= (1, 135) else "store.user_delete_threepid"
    assert "3PID removal via %s" % expected in log


def test_simultaneous_first_logins_across_workers_make_one_account(topology: WorkerTopology, ma1sd: FakeMa1sd) -> None:
    user = new_user(ma1sd, "wrace", display_name="Race", emails=("race.w@example.org",))
    clients = topology.worker_clients

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda i: clients[i % 2].login(user.user_id, user.password), range(20)))

    assert [r.status_code for r in responses] == [200] * 20, [r.text for r in responses if r.status_code != 200]
    assert {r.json()["user_id"] for r in responses} == {user.user_id}
    assert topology.count_users(user.user_id[1:].split(":")[0]) == 1
    token = responses[0].json()["access_token"]
    assert clients[0].threepid_set(token) == {("email", "race.w@example.org")}


def test_racing_first_logins_across_processes_never_move_an_address(topology: WorkerTopology, ma1sd: FakeMa1sd) -> None:
    """Issue 14, finding 3: 30 first logins at once, spread over the main
    process and both workers, whose ma1sd entries all list one address: in
    every round exactly one account holds it, and each of the others logged
    that it already belongs to someone."""
    urls = [topology.main.url] + [w.url for w in topology.workers]
    for _ in range(5):
        address = "shared.w-%s@example.org" % uuid.uuid4().hex[:8]
        users = [new_user(ma1sd, "wown", emails=(address,)) for _ in range(30)]

        responses = logins_at_once(urls, [(u.user_id, u.password) for u in users])

        assert [r.status_code for r in responses] == [200] * 30, [r.text for r in responses if r.status_code != 200]
        rows = topology.postgres.query(
            "SELECT count(*) FROM user_threepids WHERE medium = 'email' AND address = '%s'" % address,
            database=topology.database,
        )
        assert rows == [["1"]], (address, rows)
        holders = [
            u.user_id
            for u, r in zip(users, responses)
            if ("email", address) in topology.main_client.threepid_set(r.json()["access_token"])
        ]
        assert len(holders) == 1, (address, holders)
        # Every other login was told, none silently lost the address to a
        # later one (user_add_threepid overwrites the owner, so the count
        # alone would not show an address that moved).
        refused = [
            line
            for server in topology.processes()
            for line in server.log_text().splitlines()
            if address in line and "already belongs to" in line
        ]
        told = {u.user_id for u in users if any(u.user_id in line for line in refused)} - set(holders)
        assert len(refused) == 29 and len(told) == 29, (address, refused)


def test_reactivated_account_gets_its_3pids_back_at_once_on_a_worker(
    topology: WorkerTopology, ma1sd: FakeMa1sd
) -> None:
    """Issue 14, finding 11: the worker remembered the account in step; after
    deactivation and reactivation through the main process, its next login
    restores the 3PIDs Synapse dropped, without waiting for the recheck interval."""
    address = "back.w-%s@example.org" % uuid.uuid4().hex[:8]
    user = new_user(ma1sd, "wreact", emails=(address,))
    worker = topology.worker_clients[0]
    token = worker.login_ok(user.user_id, user.password)["access_token"]
    assert worker.threepid_set(token) == {("email", address)}
    worker.login_ok(user.user_id, user.password)  # now remembered in step

    # Reactivation needs Synapse's background updates done (see harness.py).
    topology.main.wait_for_background_updates()
    secret = yaml.safe_load((_template(SERVER) / "homeserver.yaml").read_text())["registration_shared_secret"]
    admin = topology.main_client.register_admin(str(secret), "wadmin%s" % uuid.uuid4().hex[:8], new_password())
    topology.main_client.deactivate(admin["access_token"], user.user_id)
    # Not one of PASSWORDS: old releases log admin request bodies at DEBUG.
    topology.main_client.reactivate(admin["access_token"], user.user_id, "local-%s" % uuid.uuid4().hex)

    token = worker.login_ok(user.user_id, user.password)["access_token"]
    assert worker.threepid_set(token) == {("email", address)}
