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
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

if TYPE_CHECKING:
    from synapse.module_api import ModuleApi

logger = logging.getLogger(__name__)

PASSWORD_LOGIN = "m.login.password"
CHECK_PATH = "/_matrix-internal/identity/v1/check_credentials"


class BlockingProvider:
    """Checks the password with a blocking POST to ma1sd, in the reactor thread."""

    def __init__(self, config: Dict[str, Any], api: "ModuleApi"):
        self._api = api
        self._url = str(config["endpoint"]).rstrip("/") + CHECK_PATH
        # The old provider had no timeout at all; a generous one keeps a
        # broken benchmark run from hanging forever.
        self._timeout = float(config.get("timeout", 60))
        api.register_password_auth_provider_callbacks(
            auth_checkers={(PASSWORD_LOGIN, ("password",)): self.check_auth},
        )
        logger.info("bench blocking provider loaded; ma1sd at %s", self._url)

    @staticmethod
    def parse_config(config: Any) -> Dict[str, Any]:
        if not isinstance(config, dict) or "endpoint" not in config:
            raise ValueError("the blocking bench provider needs 'endpoint'")
        return dict(config)

    def _check_credentials(self, user_id: str, password: str) -> Dict[str, Any]:
        body = json.dumps({"user": {"id": user_id, "password": password}}).encode("utf-8")
        request = urllib.request.Request(
            self._url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=self._timeout) as response:  # blocks the reactor
            reply = json.loads(response.read())
        auth = reply.get("auth") if isinstance(reply, dict) else None
        return auth if isinstance(auth, dict) else {}

    async def check_auth(
        self, username: str, login_type: str, login_dict: Dict[str, Any]
    ) -> Optional[Tuple[str, None]]:
        password = login_dict.get("password")
        if login_type != PASSWORD_LOGIN or not isinstance(password, str) or not password:
            return None
        user_id = self._api.get_qualified_user_id(username.lower())
        try:
            auth = self._check_credentials(user_id, password)
        except Exception as e:
            logger.warning("ma1sd call failed for %s: %s", user_id, e)
            return None
        if not auth.get("success"):
            return None
        existing = await self._api.check_user_exists(user_id)
        if existing is not None:
            return existing, None
        localpart = user_id[1:].split(":", 1)[0]
        profile = auth.get("profile") or {}
        display_name = auth.get("display_name") or profile.get("display_name")
        created = await self._api.register_user(localpart, displayname=display_name)
        return created, None
