"""pytest_twisted's decorators and Twisted's in-memory transport with types, for tests and bench.

pytest_twisted ships no type hints, so under ``mypy --strict`` every test it
decorates becomes untyped ("Untyped decorator makes function ... untyped").
These are the same decorators, called as they are, with a type that keeps the
decorated function's own signature::

    from support.twisted_helpers import async_yield_fixture, ensure_deferred

    @ensure_deferred
    async def test_login(...) -> None: ...

``string_transport()`` and ``take_written()`` do the same for Twisted's
``StringTransport`` (an in-memory connection), whose methods have no types.

Only the bare form (no arguments) is typed; ``pytest_twisted.async_yield_fixture(scope=...)``
still works untyped where a scope is needed.
"""

from typing import Any, AsyncIterator, Callable, Coroutine, Optional, TypeVar, cast

import pytest_twisted
from twisted.internet.interfaces import IAddress
from twisted.internet.testing import StringTransport

AsyncTest = TypeVar("AsyncTest", bound=Callable[..., Coroutine[Any, Any, Any]])
AsyncFixture = TypeVar("AsyncFixture", bound=Callable[..., AsyncIterator[Any]])


def ensure_deferred(test: AsyncTest) -> AsyncTest:
    """Returns ``test`` (an ``async def`` test) marked for pytest_twisted, which runs it in the reactor."""
    return cast(AsyncTest, pytest_twisted.ensureDeferred(test))


def async_yield_fixture(fixture: AsyncFixture) -> AsyncFixture:
    """Returns ``fixture`` (an ``async def`` generator) as a function-scoped pytest fixture that
    pytest_twisted runs in the reactor: the code after its ``yield`` is the teardown."""
    return cast(AsyncFixture, pytest_twisted.async_yield_fixture(fixture))


def string_transport(peer: Optional[IAddress] = None) -> StringTransport:
    """Returns a new in-memory transport: connect a protocol to it, then read what it wrote.
    ``peer`` is the address it gives as the other end's (None: Twisted's default)."""
    new: Callable[..., StringTransport] = StringTransport
    return new(peerAddress=peer)


def take_written(transport: StringTransport) -> bytes:
    """Returns the bytes written to ``transport`` since the last call, and forgets them."""
    value: Callable[[], bytes] = transport.value
    clear: Callable[[], None] = transport.clear
    written = bytes(value())
    clear()
    return written
