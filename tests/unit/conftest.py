"""Fixtures the unit tests share.

* ``serve``: starts fakes (``tests.fake_ma1sd.FakeMa1sd``, ``tests.fake_reststore.FakeRestStore``...)
  and stops them after the test;
* ``new_backend``: makes backends (``rest_auth_provider.backends``) over a real
  ``Transport`` and closes them after the test; ``backend_kind`` says which
  adapter it makes when the config does not (a module overrides it).

Typed pytest_twisted decorators for the tests are in ``tests.twisted_tests``.
"""

from typing import Any, AsyncIterator, Iterator, List, Protocol, TypeVar

import pytest

from rest_auth_provider.backends import Backend, make_backend
from rest_auth_provider.config import parse_config
from rest_auth_provider.transport import Transport
from tests.fake_ma1sd import FakeMa1sd
from tests.twisted_tests import async_yield_fixture

Fake = TypeVar("Fake", bound=FakeMa1sd)


class Serve(Protocol):
    """The ``serve`` fixture's type: ``serve(fake)`` starts ``fake`` and returns it."""

    def __call__(self, fake: Fake) -> Fake: ...


class NewBackend(Protocol):
    """The ``new_backend`` fixture's type: ``new_backend(**raw_config)`` returns a new backend."""

    def __call__(self, **raw: Any) -> Backend: ...


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Returns ``serve(fake)``: starts a fake server (a ``FakeMa1sd`` or a subclass, such as
    ``FakeRestStore``) on a free loopback port and returns it; stops every one it started
    after the test. Add users with ``fake.add_user(...)`` once it runs."""
    started: List[FakeMa1sd] = []

    def start(fake: Fake) -> Fake:
        started.append(fake.start())
        return fake

    yield start
    for fake in started:
        fake.stop()


@pytest.fixture
def backend_kind() -> str:
    """Returns the ``backend`` key ``new_backend`` uses when the config has none: ``ma1sd``
    here; a test module that tests another adapter overrides this fixture."""
    return "ma1sd"


@async_yield_fixture
async def new_backend(backend_kind: str) -> AsyncIterator[NewBackend]:
    """Returns ``new_backend(endpoint=..., **other_config_keys)``: the adapter that
    ``parse_config`` and ``make_backend`` pick (``backend_kind`` unless ``backend`` is
    given), on a real ``Transport``; closes every backend it made after the test."""
    made: List[Backend] = []

    def factory(**raw: Any) -> Backend:
        raw.setdefault("backend", backend_kind)
        config = parse_config(raw)
        made.append(make_backend(config, Transport(config)))
        return made[-1]

    yield factory
    for backend in made:
        await backend.close()
