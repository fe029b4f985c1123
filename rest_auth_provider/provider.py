"""The class Synapse loads: ``rest_auth_provider.RestAuthProvider``.

One class serves both config styles:

* ``password_providers:`` (every release): Synapse calls
  ``RestAuthProvider(config=..., account_handler=api)`` and then looks up
  ``get_supported_login_types``, ``check_auth`` and ``check_3pid_auth`` by name.
* ``modules:`` (1.46 and later): Synapse calls ``RestAuthProvider(config, api)``
  (``api=`` as a keyword before 1.62) and we register callbacks.

``check_password`` is deliberately not defined: Synapse would then log the
user in under the ID exactly as typed instead of the canonical one.
"""

import logging
from typing import Any, Awaitable, Dict, Iterable, NamedTuple, Optional, Tuple

from rest_auth_provider import __version__, metrics
from rest_auth_provider._compat import SynapseCompat, config_error, make_deferred_yieldable
from rest_auth_provider.backends import make_backend
from rest_auth_provider.config import ConfigProblem, ProviderConfig, parse_config
from rest_auth_provider.limiter import FailureLimiter
from rest_auth_provider.memo import SyncMemo
from rest_auth_provider.provisioning import Provisioner
from rest_auth_provider.response import canonical_threepid
from rest_auth_provider.safetext import printable
from rest_auth_provider.transport import BackendError, Transport
from rest_auth_provider.users import LocalRefusal, parse_login_name, password_problem

logger = logging.getLogger(__name__)

PASSWORD_LOGIN = "m.login.password"
PASSWORD_FIELDS = ("password",)

# Synapse's own defaults for rc_login.failed_attempts, used if it has none.
DEFAULT_FAILED_ATTEMPTS = (0.17, 3.0)

CheckAuthResult = Optional[Tuple[str, None]]


class Attempt(NamedTuple):
    """How a login ended: the user ID it logs in (None when refused) and its
    outcome label in ``rest_auth_provider_logins_total`` (None when the login
    was not the module's to handle and is not counted)."""

    user_id: Optional[str]
    outcome: Optional[str]


# A 3PID login left to Synapse's own lookup, or not one this module can read.
NOT_OURS = Attempt(None, None)


class RestAuthProvider:
    """Checks passwords with the identity service (ma1sd or a REST identity
    store), registers first-time users and keeps their display name and 3PIDs
    in step with what it says."""

    def __init__(self, config: ProviderConfig, api: Any = None, account_handler: Any = None):
        if account_handler is not None:
            self._style = "password_providers"
            api = account_handler
        elif api is not None:
            self._style = "modules"
        else:
            raise TypeError("RestAuthProvider needs the ModuleApi (api= or account_handler=)")
        self._api = api
        self._config = config
        self._compat = SynapseCompat(api)
        self._backend = make_backend(config, Transport(config, deferred_adapter=make_deferred_yieldable))
        metrics.backend_info.labels(backend=self._backend.kind).set(1)
        per_second, burst_count = self._compat.failed_login_limit() or DEFAULT_FAILED_ATTEMPTS
        self._failures = FailureLimiter(per_second, burst_count)
        memo = SyncMemo(config.profile_recheck_interval)
        # What a login found in step is only remembered where every process
        # hears of deactivations: Synapse drops a deactivated account's 3PIDs.
        self._memo_active = config.profile_recheck_interval > 0 and self._compat.watch_deactivations(memo.forget_user)
        if not self._memo_active:
            memo = SyncMemo(0)
        self._provisioner = Provisioner(api, self._compat, config.policy, memo, self._backend.name)

        if self._style == "modules":
            if not hasattr(api, "register_password_auth_provider_callbacks"):
                raise config_error(
                    "this Synapse is older than 1.46 and cannot load password checkers "
                    "from 'modules:'; list rest_auth_provider.RestAuthProvider under "
                    "'password_providers:' instead",
                    (),
                )
            callbacks: Dict[str, Any] = {"auth_checkers": {(PASSWORD_LOGIN, PASSWORD_FIELDS): self._module_check_auth}}
            if self._backend.threepid_lookup_enabled:
                callbacks["check_3pid_auth"] = self._module_check_3pid_auth
            api.register_password_auth_provider_callbacks(**callbacks)

        logger.info(
            "rest_auth_provider %s loaded from '%s:' (%s process); %s at %s, timeout %g s",
            __version__,
            self._style,
            "main" if self._compat.is_main_process else "worker",
            self._backend.name,
            config.endpoint,
            config.timeout,
        )
        logger.info(
            "rest_auth_provider uses: %s",
            "; ".join("%s via %s" % item for item in self._compat.describe().items()),
        )
        if self._compat.local_passwords_enabled():
            logger.warning(
                "password_config.localdb_enabled is true (Synapse's default): users can give themselves a "
                "local Synapse password that keeps working after %s refuses them. Where %s is the only "
                "source of passwords, set password_config: {localdb_enabled: false} (see docs/security.md)",
                self._backend.name,
                self._backend.name,
            )
        if config.profile_recheck_interval > 0 and not self._memo_active:
            logger.info(
                "profile_recheck_interval has no effect on this Synapse (it needs 1.69 or later to hear of "
                "deactivations on every process): every login reads the profile"
            )
        if not config.policy.registration_enforce_lowercase:
            logger.info(
                "policy.registration.username.enforceLowercase: false has no effect: "
                "Synapse only accepts lowercase user IDs, so new accounts are always created lowercase"
            )

    @staticmethod
    def parse_config(config: Any) -> ProviderConfig:
        """Returns the validated config; raises Synapse's ConfigError naming the bad key."""
        try:
            return parse_config(config)
        except ConfigProblem as e:
            raise config_error(e.message, e.path) from None

    # -- legacy ``password_providers:`` interface (looked up by name) ---------

    def get_supported_login_types(self) -> Dict[str, Iterable[str]]:
        """Returns the login types this provider handles: password logins."""
        return {PASSWORD_LOGIN: PASSWORD_FIELDS}

    async def check_auth(self, username: str, login_type: str, login_dict: Dict[str, Any]) -> Optional[str]:
        """Returns the canonical user ID when ma1sd accepts the password, else None."""
        if login_type != PASSWORD_LOGIN:
            return None
        return await self.authenticate(username, login_dict.get("password"))

    async def check_3pid_auth(self, medium: str, address: str, password: str) -> Optional[str]:
        """Returns the user ID owning an email or phone number Synapse does not
        know yet, when ma1sd maps it to a user and accepts the password; else None."""
        if not self._backend.threepid_lookup_enabled:
            return None
        return await self.authenticate_threepid(medium, address, password)

    # -- ``modules:`` callbacks (Synapse 1.46+) --------------------------------

    async def _module_check_auth(self, username: str, login_type: str, login_dict: Dict[str, Any]) -> CheckAuthResult:
        user_id = await self.check_auth(username, login_type, login_dict)
        return (user_id, None) if user_id is not None else None

    async def _module_check_3pid_auth(self, medium: str, address: str, password: str) -> CheckAuthResult:
        user_id = await self.authenticate_threepid(medium, address, password)
        return (user_id, None) if user_id is not None else None

    # -- the logic -------------------------------------------------------------
    #
    # Each login path returns an Attempt saying how it ended; _counted() is
    # the one place that counts it in rest_auth_provider_logins_total.

    async def authenticate(self, username: Any, password: Any) -> Optional[str]:
        """Returns the canonical user ID when ma1sd accepts ``password`` for
        ``username``, registering and provisioning as configured; else None.

        Never raises: Synapse before 1.46 turns an exception into HTTP 500.
        """
        return await self._counted(self._authenticate(username, password), "Login refused")

    async def authenticate_threepid(self, medium: Any, address: Any, password: Any) -> Optional[str]:
        """Returns the user ID for a login by email or phone number that
        Synapse does not know locally, when ma1sd maps it to one of our users
        and accepts the password; else None. Never raises."""
        return await self._counted(self._authenticate_threepid(medium, address, password), "3PID login refused")

    async def _counted(self, attempt: Awaitable[Attempt], refused: str) -> Optional[str]:
        """Returns the user ID ``attempt`` logs in, or None; counts its outcome.

        An exception is logged (after ``refused``) and counts as a failure on
        Synapse's side: the login paths catch the identity backend's
        BackendError themselves.
        """
        try:
            result = await attempt
        except Exception:
            logger.exception("%s: unexpected error in rest_auth_provider", refused)
            result = Attempt(None, metrics.SYNAPSE_ERROR)
        if result.outcome is not None:
            metrics.logins.labels(outcome=result.outcome).inc()
        return result.user_id

    async def _authenticate(self, username: Any, password: Any, threepid: Optional[Tuple[str, str]] = None) -> Attempt:
        """Returns how a password login as ``username`` ended (``threepid``:
        the address it was made with, counted by the failed-attempt limit too)."""
        problem = password_problem(password)
        if problem is not None:
            return self._refuse_locally(username, problem)
        try:
            name = parse_login_name(username, self._compat.server_name)
        except LocalRefusal as e:
            return self._refuse_locally(username, str(e))

        existing, deactivated = await self._compat.find_account(name.user_id)
        if existing is None and not name.registrable:
            return self._refuse_locally(username, "not a valid user ID for a new account")
        if existing is not None and deactivated:
            self._provisioner.forget(existing)
            return self._refuse_locally(existing, "the account is deactivated")
        user_id = existing if existing is not None else name.user_id
        if self._compat.is_exclusive_appservice_user(user_id) or self._compat.is_exclusive_appservice_user(
            name.user_id
        ):
            return self._refuse_locally(user_id, "the user ID is in an application service's exclusive namespace")
        # Failed attempts count against the account whatever spelling was typed.
        keys = [("user", user_id.lower())] + ([("3pid",) + threepid] if threepid is not None else [])
        if not all(self._failures.allows(key) for key in keys):
            return self._refuse_locally(user_id, "too many failed attempts (rc_login.failed_attempts)")

        try:
            reply = await self._backend.verify_password(user_id, password)
        except BackendError as e:
            logger.warning(
                "Login refused for %s: %s at %s failed: %s", user_id, self._backend.name, self._config.endpoint, e
            )
            return Attempt(None, metrics.BACKEND_ERROR)
        if not reply.success:
            for key in keys:
                self._failures.record_failure(key)
            logger.info("Login refused for %s: %s rejected the credentials", user_id, self._backend.name)
            return Attempt(None, metrics.BAD_CREDENTIALS)

        new_account = False
        if existing is None:
            registered, new_account = await self._provisioner.register(name.localpart, user_id, reply.display_name)
            if registered is None:  # the provisioner has logged why
                return Attempt(None, metrics.SYNAPSE_ERROR)
            user_id = registered
        await self._provisioner.sync(user_id, reply, new_account)
        logger.info("Login accepted for %s%s", user_id, " (new account)" if new_account else "")
        return Attempt(user_id, metrics.SUCCESS)

    def _refuse_locally(self, who: Any, reason: str) -> Attempt:
        """Logs a login refused without asking ma1sd; returns its Attempt."""
        logger.info("Login refused for %s without asking %s: %s", printable(who, 100), self._backend.name, reason)
        return Attempt(None, metrics.REFUSED_LOCALLY)

    async def _authenticate_threepid(self, medium: Any, address: Any, password: Any) -> Attempt:
        """Returns how a login by email or phone number ended; NOT_OURS when
        it is Synapse's to answer or not a 3PID this module can read."""
        if not isinstance(medium, str) or not isinstance(address, str):
            return NOT_OURS
        raw_medium, raw_address = medium, address
        canonical = canonical_threepid(medium, address)
        if canonical is None:
            return NOT_OURS
        medium, address = canonical
        owner = await self._compat.get_threepid_owner(medium, address)
        if owner is not None and (medium, address) == (raw_medium, raw_address):
            # Synapse asks password modules first, then looks the address up
            # itself, as it was sent, and calls check_auth for its owner:
            # answering here too would check the password twice.
            return NOT_OURS
        shown = "%s %s" % (medium, printable(address, 100))
        problem = password_problem(password)
        if problem is not None:
            return self._refuse_locally(shown, problem)
        if owner is not None:
            # A spelling Synapse's own lookup will miss (a phone number
            # written another way): the account holding the canonical number
            # is the one this login names.
            return await self._authenticate(owner, password, canonical)
        if not self._failures.allows(("3pid",) + canonical):
            return self._refuse_locally(shown, "too many failed attempts (rc_login.failed_attempts)")
        try:
            mxid = await self._backend.lookup_threepid(medium, address, self._compat.server_name)
        except BackendError as e:
            logger.warning(
                "Login by %s refused: %s lookup at %s failed: %s", medium, self._backend.name, self._config.endpoint, e
            )
            return Attempt(None, metrics.BACKEND_ERROR)
        if mxid is None:
            self._failures.record_failure(("3pid",) + canonical)
            logger.info("Login by %s refused: %s knows no user for it", shown, self._backend.name)
            return Attempt(None, metrics.BAD_CREDENTIALS)
        if not mxid.startswith("@"):
            return self._refuse_locally(mxid, "the lookup answered something that is not a user ID")
        return await self._authenticate(mxid, password, canonical)
