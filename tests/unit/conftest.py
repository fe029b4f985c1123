"""Fixtures the unit tests share.

* ``serve``: starts fakes (``support.fake_ma1sd.FakeMa1sd``, ``support.fake_reststore.FakeRestStore``...)
  and stops them after the test (``serve_module``: after the module);
* ``new_backend``: makes backends (``rest_auth_provider.backends``) over a real
  ``Transport`` and closes them after the test; ``backend_kind`` says which
  adapter it makes when the config does not (a module overrides it);
* ``run_without_synapse()`` (a function): runs a script in a child interpreter
  in which any import of Synapse fails.

Typed pytest_twisted decorators for the tests are in ``support.twisted_helpers``.
"""

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, List, Protocol, TypeVar

import pytest

from rest_auth_provider.backends import Backend, make_backend
from rest_auth_provider.config import parse_config
from rest_auth_provider.transport import Transport
from support.fake_ma1sd import FakeMa1sd
from support.twisted_helpers import async_yield_fixture

ROOT = Path(__file__).resolve().parents[2]
Fake = TypeVar("Fake", bound=FakeMa1sd)

# Put before the script run_without_synapse runs: from here on, importing
# Synapse fails as it does in a virtualenv without it.
_BLOCK_SYNAPSE = textwrap.dedent(
    """
    import importlib.abc, sys

    class NoSynapse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "synapse" or name.startswith("synapse."):
                raise ImportError("No module named %r (blocked by the test)" % name)
            return None

    sys.meta_path.insert(0, NoSynapse())
    """
)


def run_without_synapse(script: str, *args: str, timeout: float) -> "subprocess.CompletedProcess[str]":
    """Runs ``script`` (Python source) with ``args`` as ``sys.argv[1:]`` in a child interpreter,
    from the repository root, where any import of Synapse raises ImportError ``... (blocked by
    the test)``; returns the finished process, its stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-c", _BLOCK_SYNAPSE + textwrap.dedent(script), *args],
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Serve(Protocol):
    """The ``serve`` fixture's type: ``serve(fake)`` starts ``fake`` and returns it."""

    def __call__(self, fake: Fake) -> Fake: ...


class NewBackend(Protocol):
    """The ``new_backend`` fixture's type: ``new_backend(**raw_config)`` returns a new backend."""

    def __call__(self, **raw: Any) -> Backend: ...


def _serving() -> Iterator[Serve]:
    """Yields ``serve(fake)``, then stops every fake it started."""
    started: List[FakeMa1sd] = []

    def start(fake: Fake) -> Fake:
        started.append(fake.start())
        return fake

    yield start
    for fake in started:
        fake.stop()


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Returns ``serve(fake)``: starts a fake server (a ``FakeMa1sd`` or a subclass, such as
    ``FakeRestStore``) on a free loopback port and returns it; stops every one it started
    after the test. Add users with ``fake.add_user(...)`` once it runs."""
    yield from _serving()


@pytest.fixture(scope="module")
def serve_module() -> Iterator[Serve]:
    """Returns ``serve(fake)`` for a module-scoped fixture: one fake for all the tests of a
    module (stopping one takes half a second), stopped after the module's last test."""
    yield from _serving()


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
