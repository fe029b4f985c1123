"""A memory reactor for HTTP client tests: Twisted's MemoryReactorClock
(the test moves the clock and plays the server's side of each connection)
with a name resolver, which MemoryReactorClock lacks before Twisted 24.10."""

from typing import Any, cast

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHostnameResolver, IHostResolution, IReactorPluggableNameResolver

try:
    from twisted.internet.testing import MemoryReactorClock
except ImportError:  # pragma: no cover - Twisted before 19.7
    from twisted.test.proto_helpers import MemoryReactorClock
from zope.interface import implementer


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class _Loopback:
    """Resolves every name to 127.0.0.1 at once."""

    def resolveHostName(
        self,
        resolutionReceiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> Any:
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        resolutionReceiver.addressResolved(IPv4Address("TCP", "127.0.0.1", portNumber))
        resolutionReceiver.resolutionComplete()
        return resolution


@implementer(IReactorPluggableNameResolver)
class MemoryClock(MemoryReactorClock):
    """A memory reactor with a clock the test moves, and a name resolver."""

    def __init__(self) -> None:
        super().__init__()
        self.nameResolver = cast(IHostnameResolver, _Loopback())

    def installNameResolver(self, resolver: Any) -> Any:
        previous, self.nameResolver = self.nameResolver, resolver
        return previous
