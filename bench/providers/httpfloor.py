"""The HTTP floor: the least any module that asks a backend must do per login.

One keep-alive POST of the credentials to the fake backend (ma1sd's
``check_credentials`` or the REST store's ``auth/login``) with treq on
Twisted's persistent pool, ``success`` read from the JSON reply, then the
same account handling as ``bench.providers.floor``. No deadline, no size cap,
no concurrency cap, no profile sync, no metrics, no validation of the reply
beyond ``success``. It measures what one backend round trip costs on this
machine, so the benchmark can tell the module's own overhead from the cost of
asking a backend at all. Lives in ``bench/`` only; never use it in production.
"""

import json
import logging
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

import treq
from synapse.module_api import make_deferred_yieldable
from twisted.internet import reactor
from twisted.web.client import HTTPConnectionPool

from bench.providers.backend import BackendProvider

if TYPE_CHECKING:
    from synapse.module_api import ModuleApi

logger = logging.getLogger(__name__)

# Twisted's HTTPConnectionPool has no annotations: its constructor, with the type it returns.
_new_pool: Callable[..., HTTPConnectionPool] = HTTPConnectionPool
PATHS = {
    "ma1sd": "/_matrix-internal/identity/v1/check_credentials",
    "rest": "/_ma1sd/backend/api/v1/auth/login",
}


class HttpFloorProvider(BackendProvider):
    """Accepts a password when the backend says ``success: true``; creates the account on first login."""

    NAME = "HTTP floor"

    def __init__(self, config: Dict[str, Any], api: "ModuleApi"):
        self._backend = str(config.get("backend", "ma1sd"))
        self._url = str(config["endpoint"]).rstrip("/") + PATHS[self._backend]
        pool = _new_pool(reactor, persistent=True)
        pool.maxPersistentPerHost = 100
        self._pool = pool
        super().__init__(config, api)
        logger.info("bench HTTP floor provider loaded; %s backend at %s", self._backend, self._url)

    def _body(self, user_id: str, password: str) -> Dict[str, Any]:
        if self._backend == "rest":
            localpart, domain = user_id[1:].split(":", 1)
            return {"auth": {"mxid": user_id, "localpart": localpart, "domain": domain, "password": password}}
        return {"user": {"id": user_id, "password": password}}

    async def _accepted(self, user_id: str, password: str) -> Optional[Dict[str, Any]]:
        response = await make_deferred_yieldable(
            treq.post(self._url, json=self._body(user_id, password), pool=self._pool)
        )
        body: bytes = await make_deferred_yieldable(treq.content(response))
        reply = json.loads(body)
        auth = reply.get("auth") if isinstance(reply, dict) else None
        # No profile: the floor creates the account without a display name.
        return {} if isinstance(auth, dict) and auth.get("success") is True else None
