"""The identity services the module can ask, one small adapter each.

Both speak HTTP through the shared :class:`rest_auth_provider.transport.Transport`
(deadline, size cap, concurrency cap, TLS, never a POST twice); an adapter only
knows its protocol: what to send and how to read the reply.

* ``backend: ma1sd`` (the default): :mod:`rest_auth_provider.backends.ma1sd`,
  ma1sd's ``check_credentials`` and identity lookup API.
* ``backend: rest``: :mod:`rest_auth_provider.backends.reststore`, ma1sd's own
  REST identity store protocol (``auth/login``, ``identity/single``), spoken
  directly, without ma1sd.

Nothing here needs Synapse.
"""

from typing import TYPE_CHECKING, Optional

try:  # Python >= 3.8
    from typing import Protocol
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol  # type: ignore[assignment]

from rest_auth_provider.config import ProviderConfig
from rest_auth_provider.response import AuthReply

if TYPE_CHECKING:
    from rest_auth_provider.transport import Transport


class Backend(Protocol):
    """What the provider needs from an identity service.

    Every method raises :class:`rest_auth_provider.transport.BackendError`
    when the service cannot be asked or its answer cannot be trusted; the
    message says why, names nothing secret and is safe to log.
    """

    #: Names the service in log lines: "ma1sd", "the REST store".
    name: str
    #: The ``backend:`` config value: "ma1sd" or "rest" (metrics label).
    kind: str

    @property
    def threepid_lookup_enabled(self) -> bool:
        """Returns True when first logins by email or phone can be resolved."""
        ...

    async def verify_password(self, user_id: str, password: str) -> AuthReply:
        """Returns the service's verdict on ``password`` for the canonical,
        lowercased ``user_id`` (``AuthReply.success`` False when it refused
        the credentials)."""
        ...

    async def lookup_threepid(self, medium: str, address: str, server_name: str) -> Optional[str]:
        """Returns the Matrix ID the service maps this canonical 3PID to, or
        None when it knows no user for it."""
        ...

    async def close(self) -> None:
        """Closes idle connections."""
        ...


def make_backend(config: ProviderConfig, transport: "Transport") -> Backend:
    """Returns the adapter for ``config.backend`` ("ma1sd" or "rest"),
    speaking through ``transport``; raises ValueError for another value
    (which parse_config never lets through)."""
    if config.backend == "rest":
        from rest_auth_provider.backends.reststore import RestStoreBackend

        return RestStoreBackend(config, transport)
    if config.backend == "ma1sd":
        from rest_auth_provider.backends.ma1sd import Ma1sdBackend

        return Ma1sdBackend(config, transport)
    raise ValueError("unknown backend %r" % (config.backend,))
