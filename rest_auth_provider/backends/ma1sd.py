"""``backend: ma1sd`` (the default): ma1sd's ``check_credentials`` and
identity lookup API, over the shared transport."""

from typing import Optional

from rest_auth_provider.config import ProviderConfig
from rest_auth_provider.response import AuthReply, MalformedReply, parse_check_credentials, parse_lookup
from rest_auth_provider.transport import BackendError, Transport, decode_reply


class Ma1sdBackend:
    """Asks ma1sd about credentials and 3PIDs."""

    name = "ma1sd"
    kind = "ma1sd"

    def __init__(self, config: ProviderConfig, transport: Transport) -> None:
        self._config = config
        self._transport = transport

    @property
    def threepid_lookup_enabled(self) -> bool:
        """Returns True when first logins by email or phone can be resolved."""
        return self._config.threepid_login.enabled

    async def verify_password(self, user_id: str, password: str) -> AuthReply:
        """Returns ma1sd's verdict on ``password`` for ``user_id``.

        Raises BackendError when ma1sd cannot be asked or its reply is unusable.
        """
        reply = await self._transport.request(
            "check_credentials",
            "POST",
            self._config.check_credentials_url,
            json_body={"user": {"id": user_id, "password": password}},
        )
        try:
            return parse_check_credentials(decode_reply(reply))
        except MalformedReply as e:
            raise BackendError(str(e)) from None

    async def lookup_threepid(self, medium: str, address: str, server_name: str) -> Optional[str]:
        """Returns the Matrix ID ma1sd maps this 3PID to, or None if it knows
        none. ``server_name`` is not needed: ma1sd answers with a full ID.

        Raises BackendError when ma1sd cannot be asked or its reply is unusable.
        """
        reply = await self._transport.request(
            "lookup", "GET", self._config.lookup_url, params={"medium": medium, "address": address}
        )
        try:
            return parse_lookup(decode_reply(reply))
        except MalformedReply as e:
            raise BackendError(str(e)) from None

    async def close(self) -> None:
        """Closes idle connections."""
        await self._transport.close()
