"""The floor: a password provider that accepts every password without any HTTP call.

It registers a missing user with ``api.register_user`` and returns the
canonical user ID, so a login through it costs what Synapse's own login costs
(the auth checker round, the account on first login, the device and the
access token). Loaded from ``modules:`` like the provider under test.
"""

import logging
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

if TYPE_CHECKING:
    from synapse.module_api import ModuleApi

logger = logging.getLogger(__name__)

PASSWORD_LOGIN = "m.login.password"


class FloorProvider:
    """Accepts any non-empty password; creates the account on first login."""

    def __init__(self, config: Dict[str, Any], api: "ModuleApi"):
        self._api = api
        api.register_password_auth_provider_callbacks(
            auth_checkers={(PASSWORD_LOGIN, ("password",)): self.check_auth},
        )
        logger.info("bench floor provider loaded")

    @staticmethod
    def parse_config(config: Any) -> Dict[str, Any]:
        return dict(config or {})

    async def check_auth(
        self, username: str, login_type: str, login_dict: Dict[str, Any]
    ) -> Optional[Tuple[str, None]]:
        if login_type != PASSWORD_LOGIN or not login_dict.get("password"):
            return None
        user_id = self._api.get_qualified_user_id(username.lower())
        existing = await self._api.check_user_exists(user_id)
        if existing is not None:
            return existing, None
        localpart = user_id[1:].split(":", 1)[0]
        created = await self._api.register_user(localpart)
        logger.info("bench floor provider created %s", created)
        return created, None
