"""Fixtures: one fake ma1sd and two real Synapse servers per test session.

* ``defaults_hs``: the module with every policy at its default; loaded from
  ``modules:`` where this Synapse supports it (1.46+), else ``password_providers:``.
* ``sync_hs``: ``policy.login.profile.name`` and ``policy.all.threepid.replace``
  on, ``profile_recheck_interval: 0`` (read at every login, as the old provider
  did); loaded from ``password_providers:`` (the legacy style, every release).

Both log at DEBUG for every logger, so the secrets check sees everything.
"""

import itertools
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import yaml

from tests.fake_ma1sd import FakeMa1sd, FakeUser
from tests.integration.harness import SynapseServer, _template, module_block, supports_modules_style
from tests.integration.matrix_client import MatrixClient
from tests.integration.services import PostgresCluster, RedisServer, ServiceMissing

# The worker topology (PostgreSQL + Redis + main + 2 workers) runs in the tox
# environments that set RAP_WORKERS=1; RAP_DATABASE=postgres runs the
# single-process servers on PostgreSQL instead of SQLite.
collect_ignore = [] if os.environ.get("RAP_WORKERS") else ["test_workers.py"]
# The hostile-backend suite runs on the oldest, a middle and the newest release
# (RAP_HOSTILE=1), the load test on the newest only (RAP_LOAD=1).
if not os.environ.get("RAP_HOSTILE"):
    collect_ignore += ["test_hostile.py", "test_security.py"]
if not os.environ.get("RAP_LOAD"):
    collect_ignore.append("test_load.py")
USE_POSTGRES = os.environ.get("RAP_DATABASE") == "postgres"

TIMEOUT = 3.0

_counter = itertools.count(1)
PASSWORDS: List[str] = []


def new_password() -> str:
    """Returns a fresh password, remembered for the secrets check."""
    password = "pw-%s" % uuid.uuid4().hex
    PASSWORDS.append(password)
    return password


@dataclass
class Homeserver:
    """A running Synapse with the provider, and how it was configured."""

    server: SynapseServer
    client: MatrixClient
    style: str
    config: Dict[str, Any]
    ma1sd: FakeMa1sd

    @property
    def server_name(self) -> str:
        return self.server.server_name

    def user_id(self, localpart: str) -> str:
        return "@%s:%s" % (localpart, self.server_name)

    def new_user(self, prefix: str = "user", **kwargs: Any) -> FakeUser:
        """Adds a fresh user to the fake ma1sd; returns it."""
        localpart = "%s%d" % (prefix, next(_counter))
        return self.ma1sd.add_user(self.user_id(localpart), new_password(), **kwargs)

    def mark(self) -> int:
        """Returns the current log length, for new_log_lines()."""
        return len(self.server.log_lines())

    def new_log_lines(self, mark: int) -> List[str]:
        return self.server.log_lines(mark)

    def module_warnings(self, mark: int) -> List[str]:
        return [
            line for line in self.new_log_lines(mark) if " - rest_auth_provider" in line and " - WARNING - " in line
        ]

    def login_while_probing(
        self, user_id: str, password: str, interval: float = 0.05
    ) -> Tuple[int, float, List[float]]:
        """Logs in from another thread while probing ``/versions``; returns
        (login status, login seconds, probe latencies). Every probe must be 200."""
        result: List[Tuple[int, float]] = []

        def login() -> None:
            started = time.monotonic()
            r = MatrixClient(self.server.url).login(user_id, password)
            result.append((r.status_code, time.monotonic() - started))

        thread = threading.Thread(target=login)
        thread.start()
        probes = []
        while thread.is_alive():
            started = time.monotonic()
            assert self.client.versions().status_code == 200
            probes.append(time.monotonic() - started)
            time.sleep(interval)
        thread.join()
        return result[0][0], result[0][1], probes

    def shared_secret(self) -> str:
        template = _template(self.server_name)
        return str(yaml.safe_load((template / "homeserver.yaml").read_text())["registration_shared_secret"])


@pytest.fixture(scope="session")
def ma1sd() -> Iterator[FakeMa1sd]:
    fake = FakeMa1sd().start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _reset_ma1sd(request: Any) -> Iterator[None]:
    yield
    if "ma1sd" in request.fixturenames:
        fake = request.getfixturevalue("ma1sd")
        if fake.port and fake._server is None:
            fake.start(port=fake.port)
        fake.reset()


def start_service(factory: Any) -> Any:
    """Starts a PostgreSQL or Redis server; skips (fails when CI is set) if not installed."""
    try:
        return factory().start()
    except ServiceMissing as e:
        if os.environ.get("CI"):
            pytest.fail("CI is set and this is not installed: %s" % e)
        pytest.skip("not installed: %s" % e)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    cluster = start_service(PostgresCluster)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    server = start_service(RedisServer)
    yield server
    server.stop()


def start_homeserver(
    request: Any,
    tmp_path_factory: Any,
    ma1sd: FakeMa1sd,
    name: str,
    style: str,
    config: Dict[str, Any],
    synapse_config: Optional[Dict[str, Any]] = None,
) -> Iterator[Homeserver]:
    """Starts a Synapse named ``name`` with the module in ``style`` and
    ``config``; ``synapse_config`` adds or replaces homeserver.yaml keys."""
    workdir = Path(tmp_path_factory.mktemp(name))
    extra = module_block(style, config)
    extra.update(synapse_config or {})
    if USE_POSTGRES:
        extra["database"] = request.getfixturevalue("postgres").create_database("synapse_%s" % name)
    server = SynapseServer(workdir, extra, log_level="DEBUG", name=name)
    server.start()
    try:
        yield Homeserver(server, MatrixClient(server.url), style, config, ma1sd)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def defaults_hs(request: Any, tmp_path_factory: Any, ma1sd: FakeMa1sd) -> Iterator[Homeserver]:
    style = "modules" if supports_modules_style() else "password_providers"
    yield from start_homeserver(
        request, tmp_path_factory, ma1sd, "defaults", style, {"endpoint": ma1sd.url, "timeout": TIMEOUT}
    )


@pytest.fixture(scope="session")
def sync_hs(request: Any, tmp_path_factory: Any, ma1sd: FakeMa1sd) -> Iterator[Homeserver]:
    config = {
        "endpoint": ma1sd.url + "/",
        "timeout": TIMEOUT,
        "profile_recheck_interval": 0,
        "policy": {"login": {"profile": {"name": True}}, "all": {"threepid": {"replace": True}}},
    }
    yield from start_homeserver(request, tmp_path_factory, ma1sd, "sync", "password_providers", config)


@pytest.fixture(params=["defaults", "sync"])
def hs(request: Any) -> Homeserver:
    """Each test using this runs against both servers (both config styles)."""
    return request.getfixturevalue("%s_hs" % request.param)  # type: ignore[no-any-return]


def pytest_collection_modifyitems(items: List[Any]) -> None:
    """Runs the secrets check last, after every other test wrote its logs."""
    items.sort(key=lambda item: item.module.__name__.endswith("test_secrets"))
