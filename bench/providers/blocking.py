"""The old provider's way, for comparison only: a blocking HTTP call in the reactor.

Like the single-file "REST password provider" this module succeeds, it POSTs
the credentials to ma1sd's ``check_credentials`` with a synchronous HTTP
client (here ``urllib.request``) directly from the auth checker, i.e. inside
Synapse's reactor thread: while ma1sd thinks, the whole homeserver waits. On
success it registers a missing user with ``api.register_user``.

Lives in ``bench/`` only; never use it in production.
"""

import json
import logging
import urllib.request
from typing import TYPE_CHECKING, Any, Dict, Optional

from bench.providers.backend import BackendProvider

if TYPE_CHECKING:
    from synapse.module_api import ModuleApi

logger = logging.getLogger(__name__)

CHECK_PATH = "/_matrix-internal/identity/v1/check_credentials"


class BlockingProvider(BackendProvider):
    """Checks the password with a blocking POST to ma1sd, in the reactor thread."""

    NAME = "blocking"

    def __init__(self, config: Dict[str, Any], api: "ModuleApi"):
        self._url = str(config["endpoint"]).rstrip("/") + CHECK_PATH
        # The old provider had no timeout at all; a generous one keeps a
        # broken benchmark run from hanging forever.
        self._timeout = float(config.get("timeout", 60))
        super().__init__(config, api)
        logger.info("bench blocking provider loaded; ma1sd at %s", self._url)

    async def _accepted(self, user_id: str, password: str) -> Optional[Dict[str, Any]]:
        body = json.dumps({"user": {"id": user_id, "password": password}}).encode("utf-8")
        request = urllib.request.Request(
            self._url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=self._timeout) as response:  # blocks the reactor
            reply = json.loads(response.read())
        auth = reply.get("auth") if isinstance(reply, dict) else None
        if not isinstance(auth, dict) or not auth.get("success"):
            return None
        profile = auth.get("profile") or {}
        return {"display_name": auth.get("display_name") or profile.get("display_name")}
