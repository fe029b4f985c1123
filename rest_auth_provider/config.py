"""Parsing and validation of the module's ``config:`` block.

Every key of the old single-file provider is accepted with its old meaning and
default. Unknown keys and wrong types are errors that name the key's path, so
a typo stops Synapse at start instead of being silently ignored.

The keys are data: :data:`KEYS` lists each one with its type, default,
constraints and description; parsing, :meth:`ProviderConfig.describe` and the
configuration reference test all read it. Rules that tie keys together follow
the table as code in :func:`parse_config`. Nothing here needs Synapse: errors
are :class:`ConfigProblem`, which the provider turns into Synapse's own.
"""

import difflib
from dataclasses import dataclass, field
from functools import reduce
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

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


class ConfigProblem(Exception):
    """What is wrong with the ``config:`` block: ``path`` is the offending
    key's path inside it (``()`` for the block itself), ``message`` what is
    wrong with it. The provider turns it into Synapse's ConfigError; the CLI
    reads it as it is."""

    def __init__(self, path: Iterable[str], message: str) -> None:
        self.path: Tuple[str, ...] = tuple(path)
        self.message = message
        super().__init__(self.path, message)

    def __str__(self) -> str:
        return "%s: %s" % (".".join(("config",) + self.path), self.message)


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
        """Returns the effective settings as plain data, defaults included:
        every key of :data:`KEYS` that this backend reads, in the table's
        order and nesting.

        Values of secret keys (``headers``) are replaced by a placeholder;
        URLs are shown without credentials.
        """
        described: Dict[str, Any] = {}
        for key in KEYS:
            if key.backend not in (None, self.backend):
                continue
            section = described
            for name in key.path[:-1]:
                section = section.setdefault(name, {})
            section[key.path[-1]] = key.shown(reduce(getattr, key.attr.split("."), self))
        return described


def join_url(base: str, path: str) -> str:
    """Returns ``base`` and ``path`` joined by exactly one slash."""
    return base.rstrip("/") + "/" + path.lstrip("/")


@dataclass(frozen=True)
class Key:
    """One key of the ``config:`` block (or, when ``derived``, a value that
    ``describe()`` shows but that is computed, not set).

    ``kind`` says how a value that is set is read (``_READERS``); ``attr`` is
    where the parsed value lives in :class:`ProviderConfig` (dotted; the key's
    path by default). ``minimum``/``maximum`` bound a number (greater than the
    minimum) or whole number (from the minimum). A ``required`` key that is
    unset, or a ``location`` that is empty without ``empty_ok``, is refused
    with the ``description`` in the message. A ``secret`` key's values are
    hidden by ``describe()``. A key with a ``backend`` is only read and
    described with that backend; otherwise it keeps its default.
    """

    path: Tuple[str, ...]
    kind: str
    default: Any
    description: str
    attr: str = ""
    minimum: float = 0
    maximum: float = 0
    choices: Tuple[str, ...] = ()
    backend: Optional[str] = None
    secret: bool = False
    required: bool = False
    derived: bool = False
    empty_ok: bool = True

    def __post_init__(self) -> None:
        if not self.attr:
            object.__setattr__(self, "attr", ".".join(self.path))

    @property
    def dotted(self) -> str:
        """Returns the key's path as written in the docs, e.g. ``tls.ca_file``."""
        return ".".join(self.path)

    def shown(self, value: Any) -> Any:
        """Returns ``value`` as ``describe()`` shows it: secrets hidden, URLs without credentials."""
        if self.kind == "headers":
            return {name: "<hidden>" if self.secret else item for name, item in value}
        if self.kind == "url" and value is not None:
            return redact_url(value)
        return value


# Every key, in the order it is read and described.
KEYS: Tuple[Key, ...] = (
    Key(
        ("endpoint",),
        "url",
        None,
        "the base URL of ma1sd, e.g. http://ma1sd:8090 (with 'backend: rest', of the REST store)",
        required=True,
    ),
    Key(("backend",), "choice", "ma1sd", "what the module asks: ma1sd, or a REST identity store", choices=BACKENDS),
    Key(("check_credentials_url",), "url", None, "ma1sd's check_credentials URL", derived=True, backend="ma1sd"),
    Key(("rest_auth_url",), "url", None, "the REST store's auth/login URL", derived=True, backend="rest"),
    Key(("rest_identity_single_url",), "url", None, "the REST store's lookup URL", derived=True, backend="rest"),
    Key(
        ("rest", "auth"),
        "location",
        DEFAULT_REST_AUTH,
        "where the store checks passwords",
        backend="rest",
        empty_ok=False,
    ),
    Key(
        ("rest", "identity", "single"),
        "location",
        DEFAULT_REST_IDENTITY_SINGLE,
        "where the store maps an email address or phone number to a user; empty: off",
        attr="rest.identity_single",
        backend="rest",
    ),
    Key(("timeout",), "number", DEFAULT_TIMEOUT, "seconds a call to the backend may take", minimum=0.0, maximum=300.0),
    Key(
        ("max_response_size",),
        "integer",
        DEFAULT_MAX_RESPONSE_SIZE,
        "bytes; a larger reply is refused",
        minimum=1024,
        maximum=16 * 1024 * 1024,
    ),
    Key(
        ("max_concurrent_requests",),
        "integer",
        DEFAULT_MAX_CONCURRENT_REQUESTS,
        "calls to the backend in flight at once per process",
        minimum=1,
        maximum=10000,
    ),
    Key(
        ("profile_recheck_interval",),
        "integer",
        DEFAULT_PROFILE_RECHECK_INTERVAL,
        "seconds a profile found in step is not read again",
        minimum=0,
        maximum=86400,
    ),
    Key(("tls", "ca_file"), "string", None, "PEM file of the CAs to trust"),
    Key(("tls", "client_certificate"), "string", None, "PEM client certificate"),
    Key(("tls", "client_key"), "string", None, "PEM key of the client certificate"),
    Key(("headers",), "headers", (), "extra request headers", secret=True),
    Key(("header_files",), "headers", (), "extra request headers, each value read from a file"),
    Key(("threepid_login", "enabled"), "boolean", True, "first logins by email address or phone number"),
    Key(
        ("threepid_login", "lookup_path"),
        "path",
        DEFAULT_LOOKUP_PATH,
        "where ma1sd serves its lookup API",
        backend="ma1sd",
    ),
    Key(
        ("policy", "registration", "username", "enforceLowercase"),
        "boolean",
        True,
        "accepted for compatibility; no effect",
        attr="policy.registration_enforce_lowercase",
    ),
    Key(
        ("policy", "registration", "profile", "name"),
        "boolean",
        True,
        "set the display name when the account is created",
        attr="policy.registration_profile_name",
    ),
    Key(
        ("policy", "login", "profile", "name"),
        "boolean",
        False,
        "refresh the display name at every login",
        attr="policy.login_profile_name",
    ),
    Key(
        ("policy", "all", "threepid", "update"),
        "boolean",
        True,
        "add the 3PIDs the backend lists",
        attr="policy.threepid_update",
    ),
    Key(
        ("policy", "all", "threepid", "replace"),
        "boolean",
        False,
        "remove local 3PIDs the backend no longer lists",
        attr="policy.threepid_replace",
    ),
)

# The dataclass each first path element of a dotted ``attr`` is built into.
_SECTIONS: Dict[str, Callable[..., Any]] = {
    "tls": TlsConfig,
    "threepid_login": ThreepidLoginConfig,
    "policy": PolicyConfig,
    "rest": RestConfig,
}


def config_keys() -> List[Key]:
    """Returns the keys of :data:`KEYS` that a config sets (the derived ones left out)."""
    return [key for key in KEYS if not key.derived]


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


def _http_url(value: str, path: Tuple[str, ...]) -> str:
    """Returns ``value`` when it is a usable http:// or https:// URL; raises
    a ConfigProblem at ``path`` naming the problem otherwise."""
    # First of all, so that no later message can show a password (which may
    # hold '#', '?', '/' or '@' and so fool any URL parser).
    if "@" in value:
        raise ConfigProblem(
            path, "credentials in the URL (user:password@) are not supported; use 'headers' or 'header_files'"
        )
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ConfigProblem(path, "the URL contains white space or control characters: %s" % _quoted(value))
    if not value.isascii():
        raise ConfigProblem(path, "the URL contains non-ASCII characters: %s" % _ascii_hint(value))
    if "?" in value or "#" in value:
        raise ConfigProblem(path, "the URL must not have a query or fragment: %s" % _quoted(value))
    try:
        parts = urlsplit(value)
    except ValueError as e:
        raise ConfigProblem(path, "not a valid URL (%s): %s" % (printable(str(e)), _quoted(value))) from None
    if parts.scheme not in ("http", "https"):
        raise ConfigProblem(path, "expected an http:// or https:// URL, got %s" % _quoted(value))
    if not parts.hostname:
        raise ConfigProblem(path, "the URL has no host name: %s" % _quoted(value))
    try:
        _ = parts.port
    except ValueError:
        raise ConfigProblem(path, "the URL has an invalid port: %s" % _quoted(value)) from None
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
    raises a ConfigProblem at ``path`` otherwise."""
    shown = "'%s'" % printable(value)
    if not value.startswith("/"):
        raise ConfigProblem(path, "expected a path starting with '/', got %s" % shown)
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ConfigProblem(path, "the path contains white space or control characters: %s" % shown)
    if not value.isascii():
        raise ConfigProblem(path, "the path contains non-ASCII characters (percent-encode them): %s" % shown)
    if "?" in value or "#" in value:
        raise ConfigProblem(path, "the path must not have a query or fragment ('?' or '#'): %s" % shown)
    return value


def _rest_location(value: str, path: Tuple[str, ...]) -> str:
    """Returns ``value`` when it is, as in ma1sd's ``rest.endpoints.*``, a
    path starting with '/' (joined to ``endpoint``) or a full http:// or
    https:// URL (used as is); raises a ConfigProblem at ``path`` otherwise."""
    if value.startswith("/"):
        return _url_path(value, path)
    if value[:8].lower().startswith(("http://", "https://")):
        return _http_url(value, path)
    raise ConfigProblem(
        path,
        "expected a path starting with '/' (joined to 'endpoint') or a full http:// or https:// URL, got %s"
        % _quoted(value),
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


def _short(text: str) -> str:
    """Returns ``text``, cut to 20 characters with "..." when longer."""
    return text if len(text) <= 20 else text[:17] + "..."


def _boolean(value: Any, key: Key) -> bool:
    if not isinstance(value, bool):
        raise ConfigProblem(key.path, "expected true or false, got %s" % _kind(value))
    return value


def _number(value: Any, key: Key) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigProblem(key.path, "expected a number, got %s" % _kind(value))
    if not key.minimum < value <= key.maximum:
        raise ConfigProblem(
            key.path,
            "expected a number greater than %g and at most %g, got %s"
            % (key.minimum, key.maximum, _short(repr(value))),
        )
    return float(value)


def _integer(value: Any, key: Key) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigProblem(key.path, "expected a whole number, got %s" % _kind(value))
    if not key.minimum <= value <= key.maximum:
        raise ConfigProblem(
            key.path, "expected a whole number from %d to %d, got %s" % (key.minimum, key.maximum, _short(str(value)))
        )
    return int(value)


def _string(value: Any, key: Key) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigProblem(key.path, "expected a non-empty string, got %s" % _kind(value))
    return value


def _text(value: Any, key: Key) -> str:
    """Returns ``value``, a string that may be empty."""
    if not isinstance(value, str):
        raise ConfigProblem(key.path, "expected a string, got %s" % _kind(value))
    return value


def _choice(value: Any, key: Key) -> str:
    text = _string(value, key)
    if text not in key.choices:
        raise ConfigProblem(key.path, "expected one of %s, got '%s'" % (", ".join(key.choices), printable(text, 40)))
    return text


def _url(value: Any, key: Key) -> str:
    return _http_url(_string(value, key), key.path)


def _path(value: Any, key: Key) -> str:
    return _url_path(_string(value, key), key.path)


def _location(value: Any, key: Key) -> str:
    """Returns a ``rest.*`` location; empty only when the key allows it (which turns it off)."""
    text = _text(value, key)
    if not text:
        if key.empty_ok:
            return text
        raise ConfigProblem(key.path, "must not be empty: %s, e.g. '%s'" % (key.description, key.default))
    return _rest_location(text, key.path)


def _headers(value: Any, key: Key) -> Tuple[Tuple[str, str], ...]:
    """Returns the (name, value) pairs of a mapping of HTTP header names to strings, in order."""
    if not isinstance(value, Mapping):
        raise ConfigProblem(key.path, "expected a mapping, got %s" % _kind(value))
    pairs: List[Tuple[str, str]] = []
    for name, item in value.items():
        path = key.path + (printable(str(name)),)
        if not isinstance(name, str) or not _is_token(name):
            raise ConfigProblem(path, "not a valid HTTP header name")
        if name.lower() in _RESERVED_HEADERS:
            raise ConfigProblem(path, "this header is set by the module and cannot be configured")
        if not isinstance(item, str) or any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7F for c in item):
            raise ConfigProblem(path, "expected a single-line string without control characters")
        if name.lower() in {n.lower() for n, _ in pairs}:
            raise ConfigProblem(path, "header given twice (header names are case-insensitive)")
        pairs.append((name, item))
    return tuple(pairs)


# How a value that is set (not null) is read, by ``Key.kind``.
_READERS: Dict[str, Callable[[Any, Key], Any]] = {
    "boolean": _boolean,
    "number": _number,
    "integer": _integer,
    "string": _string,
    "choice": _choice,
    "url": _url,
    "path": _path,
    "location": _location,
    "headers": _headers,
}


def _raw_value(raw: Mapping[Any, Any], path: Tuple[str, ...]) -> Any:
    """Returns the value at ``path`` in ``raw``, or None when it or a section
    above it is unset; raises ConfigProblem when a section above it is not a mapping."""
    value: Any = raw
    for depth, name in enumerate(path):
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ConfigProblem(path[:depth], "expected a mapping, got %s" % _kind(value))
        value = value.get(name)
    return value


def _refuse_unknown_keys(raw: Mapping[Any, Any], prefix: Tuple[str, ...], keys: Sequence[Key]) -> None:
    """Raises ConfigProblem naming the first key of ``raw`` (the mapping at
    ``prefix``) that is not in ``keys``, with the closest known one; then
    looks the same way into each known section of ``raw`` that is a mapping
    (any other value is reported when it is read)."""
    below = [
        key.path[len(prefix) :] for key in keys if len(key.path) > len(prefix) and key.path[: len(prefix)] == prefix
    ]
    known = list(dict.fromkeys(rest[0] for rest in below))
    for name in raw:
        if name not in known:
            message = "unknown key (check its spelling and indentation)"
            close = difflib.get_close_matches(name, known, n=1) if isinstance(name, str) else []
            if close:
                message += "; did you mean '%s'?" % close[0]
            raise ConfigProblem(prefix + (printable(str(name)),), message)
    for name in dict.fromkeys(rest[0] for rest in below if len(rest) > 1):
        section = raw.get(name)
        if isinstance(section, Mapping):
            _refuse_unknown_keys(section, prefix + (name,), keys)


def parse_config(raw: Any) -> ProviderConfig:
    """Returns the validated configuration for the raw ``config:`` mapping.

    Raises ConfigProblem naming the offending key: first an unknown key, then
    the first key of :data:`KEYS` whose value is wrong (or missing, when
    required), then a broken rule between keys. ``raw`` may be None: Synapse
    before 1.27 passes None for a missing block.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigProblem((), "expected a mapping, got %s" % _kind(raw))
    keys = config_keys()
    _refuse_unknown_keys(raw, (), keys)
    values: Dict[str, Any] = {}
    for key in keys:
        # ``backend`` is read before every key that is only read with one backend.
        value = _raw_value(raw, key.path) if key.backend in (None, values.get("backend")) else None
        if value is not None:
            values[key.attr] = _READERS[key.kind](value, key)
        elif key.required:
            raise ConfigProblem(key.path, "required: %s" % key.description)
        else:
            values[key.attr] = key.default
    top: Dict[str, Any] = {}
    sections: Dict[str, Dict[str, Any]] = {}
    for attr, value in values.items():
        head, _, name = attr.partition(".")
        if name:
            sections.setdefault(head, {})[name] = value
        else:
            top[attr] = value
    for head, fields in sections.items():
        top[head] = _SECTIONS[head](**fields)
    config = ProviderConfig(**top)
    _check_rules(raw, config)
    return config


def _check_rules(raw: Mapping[Any, Any], config: ProviderConfig) -> None:
    """Raises ConfigProblem when keys that are each valid do not fit together."""
    if config.backend != "rest" and raw.get("rest") is not None:
        raise ConfigProblem(("rest",), "only read with 'backend: rest' (the backend is '%s')" % config.backend)
    tls = config.tls
    if tls.client_key and not tls.client_certificate:
        raise ConfigProblem(("tls", "client_key"), "client_key needs client_certificate")
    if tls.ca_file or tls.client_certificate:
        urls = (
            [config.rest_auth_url, config.rest_identity_single_url] if config.backend == "rest" else [config.endpoint]
        )
        if not any(url and url.lower().startswith("https://") for url in urls):
            raise ConfigProblem(("tls",), "TLS settings need an https:// endpoint")
    duplicated = {n.lower() for n, _ in config.headers} & {n.lower() for n, _ in config.header_files}
    if duplicated:
        raise ConfigProblem(("header_files",), "header set twice: %s" % ", ".join(sorted(duplicated)))
    for name, file_path in config.header_files:
        try:
            read_header_file(file_path)
        except ValueError as e:
            raise ConfigProblem(("header_files", name), str(e)) from None
    if config.backend == "rest" and _raw_value(raw, ("threepid_login", "lookup_path")) is not None:
        raise ConfigProblem(
            ("threepid_login", "lookup_path"),
            "belongs to 'backend: ma1sd'; with 'backend: rest' the lookup is 'rest.identity.single'",
        )
