"""Parsing and validation of the module's ``config:`` block.

Every key of the old single-file provider is accepted with its old meaning and
default. Unknown keys and wrong types are errors that name the key's path, so
a typo stops Synapse at start instead of being silently ignored.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from rest_auth_provider._compat import config_error
from rest_auth_provider.safetext import printable, redact_url, shown_url

CHECK_CREDENTIALS_PATH = "/_matrix-internal/identity/v1/check_credentials"
DEFAULT_LOOKUP_PATH = "/_matrix/identity/api/v1/lookup"

# ``backend: rest``: ma1sd's own ``rest.endpoints.*`` defaults.
DEFAULT_REST_AUTH = "/_ma1sd/backend/api/v1/auth/login"
DEFAULT_REST_IDENTITY_SINGLE = "/_ma1sd/backend/api/v1/identity/single"
BACKENDS = ("ma1sd", "rest")

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_RESPONSE_SIZE = 64 * 1024
DEFAULT_MAX_CONCURRENT_REQUESTS = 100
DEFAULT_PROFILE_RECHECK_INTERVAL = 300

# More than any header value needs; a path pointing at something else (a log,
# /dev/zero) fails instead of being read whole.
MAX_HEADER_FILE_SIZE = 16 * 1024

# Header names we set ourselves; letting the config override them would break
# the request framing or the JSON contract.
_RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "transfer-encoding"})


@dataclass(frozen=True)
class TlsConfig:
    """TLS settings for an ``https://`` endpoint. Verification is always on."""

    ca_file: Optional[str] = None
    client_certificate: Optional[str] = None
    client_key: Optional[str] = None


@dataclass(frozen=True)
class ThreepidLoginConfig:
    """Login with an email address or phone number Synapse has not seen yet."""

    enabled: bool = True
    lookup_path: str = DEFAULT_LOOKUP_PATH


@dataclass(frozen=True)
class RestConfig:
    """Where a REST identity store (``backend: rest``) serves its API, as in
    ma1sd's ``rest.endpoints.*``: a path joined to ``endpoint``, or a full
    URL. ``identity_single`` is empty when first logins by 3PID are off."""

    auth: str = DEFAULT_REST_AUTH
    identity_single: str = DEFAULT_REST_IDENTITY_SINGLE


@dataclass(frozen=True)
class PolicyConfig:
    """The old provider's ``policy.*`` keys, with the old defaults."""

    registration_enforce_lowercase: bool = True
    registration_profile_name: bool = True
    login_profile_name: bool = False
    threepid_update: bool = True
    threepid_replace: bool = False


@dataclass(frozen=True)
class ProviderConfig:
    """The validated module configuration."""

    endpoint: str
    timeout: float = DEFAULT_TIMEOUT
    max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS
    profile_recheck_interval: int = DEFAULT_PROFILE_RECHECK_INTERVAL
    tls: TlsConfig = field(default_factory=TlsConfig)
    headers: Tuple[Tuple[str, str], ...] = ()
    header_files: Tuple[Tuple[str, str], ...] = ()
    threepid_login: ThreepidLoginConfig = field(default_factory=ThreepidLoginConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    backend: str = "ma1sd"
    rest: RestConfig = field(default_factory=RestConfig)

    @property
    def check_credentials_url(self) -> str:
        """Returns the full URL of ma1sd's ``check_credentials`` endpoint."""
        return join_url(self.endpoint, CHECK_CREDENTIALS_PATH)

    @property
    def lookup_url(self) -> str:
        """Returns the full URL of the 3PID lookup endpoint."""
        return join_url(self.endpoint, self.threepid_login.lookup_path)

    @property
    def rest_auth_url(self) -> str:
        """Returns the full URL of the REST store's ``auth/login`` endpoint."""
        return self._rest_url(self.rest.auth)

    @property
    def rest_identity_single_url(self) -> Optional[str]:
        """Returns the full URL of the REST store's ``identity/single``
        endpoint, or None when it is turned off (``rest.identity.single: ""``)."""
        if not self.rest.identity_single:
            return None
        return self._rest_url(self.rest.identity_single)

    def _rest_url(self, value: str) -> str:
        """Returns ``value`` joined to ``endpoint`` when it is a path, else as is (a full URL)."""
        return join_url(self.endpoint, value) if value.startswith("/") else value

    def describe(self) -> Dict[str, Any]:
        """Returns the effective settings as plain data, defaults included.

        Header values are replaced by a placeholder: they usually hold secrets.
        """
        described: Dict[str, Any] = {
            "endpoint": redact_url(self.endpoint),
            "backend": self.backend,
        }
        threepid_login: Dict[str, Any] = {"enabled": self.threepid_login.enabled}
        if self.backend == "rest":
            single_url = self.rest_identity_single_url
            described.update(
                {
                    "rest_auth_url": redact_url(self.rest_auth_url),
                    "rest_identity_single_url": None if single_url is None else redact_url(single_url),
                    "rest": {"auth": self.rest.auth, "identity": {"single": self.rest.identity_single}},
                }
            )
        else:
            described["check_credentials_url"] = redact_url(self.check_credentials_url)
            threepid_login["lookup_path"] = self.threepid_login.lookup_path
        described.update(
            {
                "timeout": self.timeout,
                "max_response_size": self.max_response_size,
                "max_concurrent_requests": self.max_concurrent_requests,
                "profile_recheck_interval": self.profile_recheck_interval,
                "tls": {
                    "ca_file": self.tls.ca_file,
                    "client_certificate": self.tls.client_certificate,
                    "client_key": self.tls.client_key,
                },
                "headers": {name: "<hidden>" for name, _ in self.headers},
                "header_files": dict(self.header_files),
                "threepid_login": threepid_login,
                "policy": {
                    "registration": {
                        "username": {"enforceLowercase": self.policy.registration_enforce_lowercase},
                        "profile": {"name": self.policy.registration_profile_name},
                    },
                    "login": {"profile": {"name": self.policy.login_profile_name}},
                    "all": {
                        "threepid": {
                            "update": self.policy.threepid_update,
                            "replace": self.policy.threepid_replace,
                        }
                    },
                },
            }
        )
        return described


def join_url(base: str, path: str) -> str:
    """Returns ``base`` and ``path`` joined by exactly one slash."""
    return base.rstrip("/") + "/" + path.lstrip("/")


class _Section:
    """A mapping being read: remembers which keys were used, so that the
    leftovers can be reported as unknown."""

    def __init__(self, raw: Any, path: Tuple[str, ...]):
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise config_error("expected a mapping, got %s" % _kind(raw), path)
        self._raw = raw
        self._path = path
        self._seen: List[str] = []

    def _get(self, key: str) -> Any:
        self._seen.append(key)
        return self._raw.get(key)

    def section(self, key: str) -> "_Section":
        return _Section(self._get(key), self._path + (key,))

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise config_error("expected true or false, got %s" % _kind(value), self._path + (key,))
        return value

    def number(self, key: str, default: float, minimum: float, maximum: float) -> float:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise config_error("expected a number, got %s" % _kind(value), self._path + (key,))
        if not minimum < value <= maximum:
            shown = repr(value) if len(repr(value)) <= 20 else repr(value)[:17] + "..."
            raise config_error(
                "expected a number greater than %g and at most %g, got %s" % (minimum, maximum, shown),
                self._path + (key,),
            )
        return float(value)

    def integer(self, key: str, default: int, minimum: int, maximum: int) -> int:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise config_error("expected a whole number, got %s" % _kind(value), self._path + (key,))
        if not minimum <= value <= maximum:
            shown = str(value) if len(str(value)) <= 20 else str(value)[:17] + "..."
            raise config_error(
                "expected a whole number from %d to %d, got %s" % (minimum, maximum, shown),
                self._path + (key,),
            )
        return int(value)

    def string(self, key: str, default: Optional[str]) -> Optional[str]:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            raise config_error("expected a non-empty string, got %s" % _kind(value), self._path + (key,))
        return value

    def text(self, key: str, default: str) -> str:
        """Returns the string at ``key``, which may be empty, or ``default`` when unset."""
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise config_error("expected a string, got %s" % _kind(value), self._path + (key,))
        return value

    def is_set(self, key: str) -> bool:
        """Returns True when ``key`` is present with a value other than null."""
        return self._raw.get(key) is not None

    def string_map(self, key: str) -> Tuple[Tuple[str, str], ...]:
        section = self.section(key)
        pairs: List[Tuple[str, str]] = []
        for name, value in section._raw.items():
            path = section._path + (printable(str(name)),)
            section._seen.append(name)
            if not isinstance(name, str) or not _is_token(name):
                raise config_error("not a valid HTTP header name", path)
            if name.lower() in _RESERVED_HEADERS:
                raise config_error("this header is set by the module and cannot be configured", path)
            if not isinstance(value, str) or any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7F for c in value):
                raise config_error("expected a single-line string without control characters", path)
            if name.lower() in {n.lower() for n, _ in pairs}:
                raise config_error("header given twice (header names are case-insensitive)", path)
            pairs.append((name, value))
        return tuple(pairs)

    def finish(self) -> None:
        """Raises a ConfigError naming the first key that was never read."""
        for key in self._raw:
            if key not in self._seen:
                raise config_error(
                    "unknown key (check its spelling and indentation)", self._path + (printable(str(key)),)
                )


def _is_token(name: str) -> bool:
    allowed = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return bool(name) and all(c in allowed for c in name)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean (%s)" % ("true" if value else "false")
    if isinstance(value, str):
        return "a string ('%s')" % printable(value, 40)
    if isinstance(value, (int, float)):
        return "a number (%r)" % (value,)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, Sequence):
        return "a list"
    return type(value).__name__


def _quoted(url: str) -> str:
    """Returns ``url`` quoted, fit for an error message: credentials redacted, control characters escaped."""
    return "'%s'" % shown_url(url)


def _endpoint(value: Optional[str]) -> str:
    if value is None:
        raise config_error(
            "required: the base URL of ma1sd, e.g. http://ma1sd:8090 (with 'backend: rest', of the REST store)",
            ("endpoint",),
        )
    return _http_url(value, ("endpoint",))


def _http_url(value: str, path: Tuple[str, ...]) -> str:
    """Returns ``value`` when it is a usable http:// or https:// URL; raises
    a ConfigError at ``path`` naming the problem otherwise."""
    # First of all, so that no later message can show a password (which may
    # hold '#', '?', '/' or '@' and so fool any URL parser).
    if "@" in value:
        raise config_error(
            "credentials in the URL (user:password@) are not supported; use 'headers' or 'header_files'", path
        )
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise config_error("the URL contains white space or control characters: %s" % _quoted(value), path)
    if not value.isascii():
        raise config_error("the URL contains non-ASCII characters: %s" % _ascii_hint(value), path)
    if "?" in value or "#" in value:
        raise config_error("the URL must not have a query or fragment: %s" % _quoted(value), path)
    try:
        parts = urlsplit(value)
    except ValueError as e:
        raise config_error("not a valid URL (%s): %s" % (printable(str(e)), _quoted(value)), path) from None
    if parts.scheme not in ("http", "https"):
        raise config_error("expected an http:// or https:// URL, got %s" % _quoted(value), path)
    if not parts.hostname:
        raise config_error("the URL has no host name: %s" % _quoted(value), path)
    if parts.query or parts.fragment:
        raise config_error("the URL must not have a query or fragment: %s" % _quoted(value), path)
    try:
        _ = parts.port
    except ValueError:
        raise config_error("the URL has an invalid port: %s" % _quoted(value), path) from None
    return value


def _ascii_hint(url: str) -> str:
    """Returns how to write ``url`` in ASCII: its host name in punycode, when
    that is where the non-ASCII characters are and the name can be encoded."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if host and not host.isascii() and parts.path.isascii():
            ascii_host = host.encode("idna").decode("ascii")
            netloc = parts.netloc.lower().replace(host, ascii_host, 1)
            return "%s; write the host name in its ASCII (punycode) form: '%s'" % (
                _quoted(url),
                shown_url(parts._replace(netloc=netloc).geturl()),
            )
    except (ValueError, UnicodeError):
        pass
    return "%s; use the ASCII form: the host name in punycode (xn--...), the path percent-encoded" % _quoted(url)


def _url_path(value: str, path: Tuple[str, ...]) -> str:
    """Returns ``value`` when it is a path that can be requested as written;
    raises a ConfigError at ``path`` otherwise."""
    shown = "'%s'" % printable(value)
    if not value.startswith("/"):
        raise config_error("expected a path starting with '/', got %s" % shown, path)
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise config_error("the path contains white space or control characters: %s" % shown, path)
    if not value.isascii():
        raise config_error("the path contains non-ASCII characters (percent-encode them): %s" % shown, path)
    if "?" in value or "#" in value:
        raise config_error("the path must not have a query or fragment ('?' or '#'): %s" % shown, path)
    return value


def _rest_location(value: str, path: Tuple[str, ...]) -> str:
    """Returns ``value`` when it is, as in ma1sd's ``rest.endpoints.*``, a
    path starting with '/' (joined to ``endpoint``) or a full http:// or
    https:// URL (used as is); raises a ConfigError at ``path`` otherwise."""
    if value.startswith("/"):
        return _url_path(value, path)
    if value[:8].lower().startswith(("http://", "https://")):
        return _http_url(value, path)
    raise config_error(
        "expected a path starting with '/' (joined to 'endpoint') or a full http:// or https:// URL, got %s"
        % _quoted(value),
        path,
    )


def read_header_file(path: str) -> str:
    """Returns the header value held in the file at ``path``: its one line,
    without the line break at its end and without surrounding spaces or tabs.

    Raises ValueError, with a message that never shows the file's content,
    when the file cannot be read, is empty, larger than
    ``MAX_HEADER_FILE_SIZE``, has more than one line, or holds anything but
    printable ASCII characters and tabs.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_HEADER_FILE_SIZE + 1)
    except OSError as e:
        raise ValueError("cannot read %s (%s)" % (printable(path), e.strerror or type(e).__name__)) from None
    if len(data) > MAX_HEADER_FILE_SIZE:
        raise ValueError("%s is larger than %d bytes: not a header value" % (printable(path), MAX_HEADER_FILE_SIZE))
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if b"\n" in data or b"\r" in data:
        raise ValueError("%s has more than one line; a header value is one line" % printable(path))
    if any(byte < 0x20 and byte != 0x09 or byte == 0x7F for byte in data):
        raise ValueError("%s holds control characters" % printable(path))
    if any(byte > 0x7F for byte in data):
        raise ValueError("%s holds non-ASCII characters; a header value must be ASCII" % printable(path))
    value = data.decode("ascii").strip(" \t")
    if not value:
        raise ValueError("%s is empty" % printable(path))
    return value


def parse_config(raw: Any) -> ProviderConfig:
    """Returns the validated configuration for the raw ``config:`` mapping.

    Raises Synapse's ``ConfigError`` with the path of the offending key.
    ``raw`` may be None: Synapse before 1.27 passes None for a missing block.
    """
    top = _Section(raw, ())
    endpoint = _endpoint(top.string("endpoint", None))
    backend = top.string("backend", "ma1sd")
    if backend not in BACKENDS:
        raise config_error(
            "expected one of %s, got '%s'" % (", ".join(BACKENDS), printable(str(backend), 40)), ("backend",)
        )
    rest = _rest(top, backend)
    timeout = top.number("timeout", DEFAULT_TIMEOUT, 0.0, 300.0)
    max_response_size = top.integer("max_response_size", DEFAULT_MAX_RESPONSE_SIZE, 1024, 16 * 1024 * 1024)
    max_concurrent = top.integer("max_concurrent_requests", DEFAULT_MAX_CONCURRENT_REQUESTS, 1, 10000)
    recheck = top.integer("profile_recheck_interval", DEFAULT_PROFILE_RECHECK_INTERVAL, 0, 86400)

    tls_section = top.section("tls")
    tls = TlsConfig(
        ca_file=tls_section.string("ca_file", None),
        client_certificate=tls_section.string("client_certificate", None),
        client_key=tls_section.string("client_key", None),
    )
    tls_section.finish()
    if tls.client_key and not tls.client_certificate:
        raise config_error("client_key needs client_certificate", ("tls", "client_key"))
    if tls.ca_file or tls.client_certificate:
        if backend == "rest":
            urls = [endpoint if u.startswith("/") else u for u in (rest.auth, rest.identity_single) if u]
        else:
            urls = [endpoint]
        if not any(url.lower().startswith("https://") for url in urls):
            raise config_error("TLS settings need an https:// endpoint", ("tls",))

    headers = top.string_map("headers")
    header_files = top.string_map("header_files")
    duplicated = {n.lower() for n, _ in headers} & {n.lower() for n, _ in header_files}
    if duplicated:
        raise config_error("header set twice: %s" % ", ".join(sorted(duplicated)), ("header_files",))
    for name, file_path in header_files:
        try:
            read_header_file(file_path)
        except ValueError as e:
            raise config_error(str(e), ("header_files", name)) from None

    login_section = top.section("threepid_login")
    if backend == "rest" and login_section.is_set("lookup_path"):
        raise config_error(
            "belongs to 'backend: ma1sd'; with 'backend: rest' the lookup is 'rest.identity.single'",
            ("threepid_login", "lookup_path"),
        )
    lookup_path = login_section.string("lookup_path", DEFAULT_LOOKUP_PATH)
    assert lookup_path is not None
    lookup_path = _url_path(lookup_path, ("threepid_login", "lookup_path"))
    threepid_login = ThreepidLoginConfig(enabled=login_section.boolean("enabled", True), lookup_path=lookup_path)
    login_section.finish()

    policy_section = top.section("policy")
    registration = policy_section.section("registration")
    username = registration.section("username")
    enforce_lowercase = username.boolean("enforceLowercase", True)
    username.finish()
    reg_profile = registration.section("profile")
    reg_profile_name = reg_profile.boolean("name", True)
    reg_profile.finish()
    registration.finish()
    login = policy_section.section("login")
    login_profile = login.section("profile")
    login_profile_name = login_profile.boolean("name", False)
    login_profile.finish()
    login.finish()
    all_section = policy_section.section("all")
    threepid = all_section.section("threepid")
    threepid_update = threepid.boolean("update", True)
    threepid_replace = threepid.boolean("replace", False)
    threepid.finish()
    all_section.finish()
    policy_section.finish()
    top.finish()

    return ProviderConfig(
        endpoint=endpoint,
        timeout=timeout,
        max_response_size=max_response_size,
        max_concurrent_requests=max_concurrent,
        profile_recheck_interval=recheck,
        tls=tls,
        headers=headers,
        header_files=header_files,
        threepid_login=threepid_login,
        policy=PolicyConfig(
            registration_enforce_lowercase=enforce_lowercase,
            registration_profile_name=reg_profile_name,
            login_profile_name=login_profile_name,
            threepid_update=threepid_update,
            threepid_replace=threepid_replace,
        ),
        backend=backend,
        rest=rest,
    )


def _rest(top: _Section, backend: str) -> RestConfig:
    """Returns the ``rest:`` settings (the defaults unless ``backend`` is
    ``rest``); raises a ConfigError when ``rest:`` is set for another backend."""
    if backend != "rest":
        if top.is_set("rest"):
            raise config_error("only read with 'backend: rest' (the backend is '%s')" % backend, ("rest",))
        top.section("rest")  # null: nothing set
        return RestConfig()
    section = top.section("rest")
    auth = section.text("auth", DEFAULT_REST_AUTH)
    if not auth:
        raise config_error(
            "must not be empty: where the store checks passwords, e.g. '%s'" % DEFAULT_REST_AUTH, ("rest", "auth")
        )
    auth = _rest_location(auth, ("rest", "auth"))
    identity = section.section("identity")
    single = identity.text("single", DEFAULT_REST_IDENTITY_SINGLE)
    if single:
        single = _rest_location(single, ("rest", "identity", "single"))
    identity.finish()
    section.finish()
    return RestConfig(auth=auth, identity_single=single)
