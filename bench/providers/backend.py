"""What the comparison providers that ask a backend share: the login flow around one backend call.

A subclass names itself (``NAME``) and defines ``_accepted(user_id, password)``;
``check_auth`` does the rest the same way for all of them: only non-empty
``m.login.password`` logins, the user ID qualified, a failed call logged and
refused, the account created on first login. Lives in ``bench/`` only.
"""

import logging
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

if TYPE_CHECKING:
    from synapse.module_api import ModuleApi

logger = logging.getLogger(__name__)

PASSWORD_LOGIN = "m.login.password"


class BackendProvider:
    """Accepts a password when ``_accepted`` says the backend does; creates the account on first login."""

    #: How the start-up log line and the config error name the provider.
    NAME = "backend"

    def __init__(self, config: Dict[str, Any], api: "ModuleApi"):
        self._api = api
        api.register_password_auth_provider_callbacks(
            auth_checkers={(PASSWORD_LOGIN, ("password",)): self.check_auth},
        )

    @classmethod
    def parse_config(cls, config: Any) -> Dict[str, Any]:
        """Returns a copy of ``config``; raises ValueError without an ``endpoint``."""
        if not isinstance(config, dict) or "endpoint" not in config:
            raise ValueError("the %s bench provider needs 'endpoint'" % cls.NAME)
        return dict(config)

    async def _accepted(self, user_id: str, password: str) -> Optional[Dict[str, Any]]:
        """Returns the backend's verdict: the new account's profile (``display_name`` or none) when
        it accepts the password, None when it refuses it; raises when the call fails."""
        raise NotImplementedError

    async def check_auth(
        self, username: str, login_type: str, login_dict: Dict[str, Any]
    ) -> Optional[Tuple[str, None]]:
        """Returns the user ID for Synapse when the backend accepts the password, else None."""
        password = login_dict.get("password")
        if login_type != PASSWORD_LOGIN or not isinstance(password, str) or not password:
            return None
        user_id = self._api.get_qualified_user_id(username.lower())
        try:
            profile = await self._accepted(user_id, password)
        except Exception as e:
            logger.warning("%s: backend call failed for %s: %s", self.NAME, user_id, type(e).__name__)
            return None
        if profile is None:
            return None
        existing = await self._api.check_user_exists(user_id)
        if existing is not None:
            return existing, None
        created = await self._api.register_user(user_id[1:].split(":", 1)[0], displayname=profile.get("display_name"))
        return created, None
