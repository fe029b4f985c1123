"""Fixtures: one fake backend and two real Synapse servers per test session.

``RAP_BACKEND`` chooses the backend the whole suite runs against: ``ma1sd``
(the default; the fake is a :class:`support.fake_ma1sd.FakeMa1sd`) or ``rest``
(a :class:`support.fake_reststore.FakeRestStore`, and every homeserver the suite
starts gets ``backend: rest``). The fixture and attribute keep the name
``ma1sd`` (``hs.ma1sd``): "the fake backend". Tests that only make sense for
one protocol carry ``@pytest.mark.backend("ma1sd")`` (or ``"rest"``) and are
deselected under the other one.

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

from support.fake_ma1sd import FakeMa1sd, FakeUser
from support.fake_reststore import FakeRestStore
from support.harness import SynapseServer, _template, module_block, supports_modules_style
from support.matrix_client import MatrixClient
from support.services import PostgresCluster, RedisServer, ServiceMissing

# The worker topology (PostgreSQL + Redis + main + 2 workers) runs in the tox
# environments that set RAP_WORKERS=1; RAP_DATABASE=postgres runs the
# single-process servers on PostgreSQL instead of SQLite.
collect_ignore = [] if os.environ.get("RAP_WORKERS") else ["test_workers.py"]
# The hostile-backend suite runs on the oldest, a middle and the newest release
# (RAP_HOSTILE=1), the load test on the newest only (RAP_LOAD=1).
if not os.environ.get("RAP_HOSTILE"):
    collect_ignore += ["test_hostile.py", "test_hostile_rest.py", "test_security.py"]
if not os.environ.get("RAP_LOAD"):
    collect_ignore.append("test_load.py")
USE_POSTGRES = os.environ.get("RAP_DATABASE") == "postgres"

# The backend every homeserver of this run asks, and how the module's log
# lines name it ("Login refused for ...: ma1sd rejected the credentials").
BACKENDS = {"ma1sd": "ma1sd", "rest": "the REST store"}
BACKEND = os.environ.get("RAP_BACKEND") or "ma1sd"
if BACKEND not in BACKENDS:
    raise ValueError("RAP_BACKEND must be one of %s, not %r" % (", ".join(sorted(BACKENDS)), BACKEND))
BACKEND_NAME = BACKENDS[BACKEND]
# The ``endpoint`` label of the module's request-duration metric for a password check.
CHECK_ENDPOINT_LABEL = {"ma1sd": "check_credentials", "rest": "auth_login"}[BACKEND]

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

    @property
    def rest_store(self) -> FakeRestStore:
        """The fake backend as the REST store it is in tests marked ``backend("rest")``."""
        assert isinstance(self.ma1sd, FakeRestStore), "only with RAP_BACKEND=rest"
        return self.ma1sd

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
        while True:  # at least one probe, however fast the login
            started = time.monotonic()
            assert self.client.versions().status_code == 200
            probes.append(time.monotonic() - started)
            if not thread.is_alive():
                break
            time.sleep(interval)
        thread.join()
        return result[0][0], result[0][1], probes

    def shared_secret(self) -> str:
        template = _template(self.server_name)
        return str(yaml.safe_load((template / "homeserver.yaml").read_text())["registration_shared_secret"])


def new_fake(tls: Optional[Tuple[str, str]] = None, required_headers: Optional[Dict[str, str]] = None) -> FakeMa1sd:
    """Returns a fake of this run's backend, not started."""
    if BACKEND == "rest":
        return FakeRestStore(tls=tls, required_headers=required_headers)
    return FakeMa1sd(tls=tls, required_headers=required_headers)


def with_backend(config: Dict[str, Any]) -> Dict[str, Any]:
    """Returns the module config ``config`` with this run's ``backend:``
    (nothing added for ma1sd, the default, so that runs as deployed)."""
    if BACKEND == "ma1sd":
        return dict(config)
    return dict(config, backend=BACKEND)


# Every Synapse the suite started (and checked), for the secrets check.
SERVERS: List[SynapseServer] = []


def check_started(server: SynapseServer) -> None:
    """Checks that the module in a freshly started ``server`` asks this run's
    backend; adds the server to those whose output the secrets check reads."""
    SERVERS.append(server)
    assert_backend(server)


def assert_backend(server: SynapseServer) -> None:
    """Fails unless the module in this running ``server`` asks this run's backend."""
    loaded = [
        line for line in server.log_text().splitlines() if "rest_auth_provider" in line and " loaded from " in line
    ]
    assert loaded and all("; %s at " % BACKEND_NAME in line for line in loaded), (BACKEND, loaded)


@pytest.fixture(scope="session")
def ma1sd() -> Iterator[FakeMa1sd]:
    """The fake backend of this run: a FakeMa1sd, or a FakeRestStore with RAP_BACKEND=rest."""
    fake = new_fake().start()
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
    ``config`` (plus this run's ``backend:``); ``synapse_config`` adds or
    replaces homeserver.yaml keys."""
    workdir = Path(tmp_path_factory.mktemp(name))
    config = with_backend(config)
    extra = module_block(style, config)
    extra.update(synapse_config or {})
    if USE_POSTGRES:
        extra["database"] = request.getfixturevalue("postgres").create_database("synapse_%s" % name)
    server = SynapseServer(workdir, extra, log_level="DEBUG", name=name)
    server.start()
    try:
        check_started(server)
        # A new database's background update "users_set_deactivated_flag"
        # marks every account without a password hash, token or 3PID as
        # deactivated: an account the module has just created would lose that
        # race. Production databases ran it long ago; the tests wait for it.
        server.wait_for_background_updates()
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
    server: Homeserver = request.getfixturevalue("%s_hs" % request.param)
    return server


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers",
        "backend(name): the test only applies to this backend (ma1sd or rest); "
        "deselected when RAP_BACKEND names the other",
    )


def pytest_collection_modifyitems(config: Any, items: List[Any]) -> None:
    """Deselects the tests of the other backend; runs the secrets check
    last, after every other test wrote its logs."""
    other = [item for item in items if any(m.args[0] != BACKEND for m in item.iter_markers("backend"))]
    if other:
        config.hook.pytest_deselected(items=other)
        deselected = set(other)
        items[:] = [item for item in items if item not in deselected]
    items.sort(key=lambda item: item.module.__name__.endswith("test_secrets"))
