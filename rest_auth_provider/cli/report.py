"""Findings and results of ``check``: exit codes, the Report that prints them
as text lines or one JSON object, and small formatting helpers."""

import importlib.util
import json
import sys
from importlib import metadata as importlib_metadata
from typing import Any, Dict, List, Optional, Sequence

from rest_auth_provider import __version__
from rest_auth_provider.safetext import printable

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONFIG = 2
EXIT_BACKEND = 3
EXIT_REFUSED = 4
EXIT_USAGE = 64
EXIT_INTERRUPTED = 130

EXIT_MEANINGS = {
    EXIT_OK: "all good",
    EXIT_CONFIG: "configuration error",
    EXIT_BACKEND: "ma1sd unreachable or not answering like ma1sd",
    EXIT_REFUSED: "credentials refused",
}

OK = "OK"
WARN = "WARN"
FAIL = "FAIL"

# The documented fields of ``--json`` (docs/check.md) below the top level:
# each is always there, null when its step was not reached.
USER_FIELDS = ("name", "user_id", "threepid", "registrable", "checked", "accepted", "ms", "error", "login")
PROBE_FIELDS: Dict[str, Sequence[str]] = {
    "dns": ("ok", "host", "addresses", "ms", "error"),
    "tcp": ("ok", "address", "port", "ms", "error"),
    "tls": ("ok", "version", "verified_with", "ms", "certificate", "error"),
    "http": ("ok", "url", "status", "ms", "ma1sd_like", "errcode", "detail", "error"),
}
REST_HTTP_FIELDS = ("ok", "url", "status", "ms", "store_like", "detail", "error")


class Report:
    """Collects findings and structured results; prints text lines as they come unless JSON is wanted."""

    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.checks: List[Dict[str, str]] = []
        self.data: Dict[str, Any] = {
            "version": __version__,
            "synapse_version": _synapse_version(),
            "config_files": [],
            "module": None,
            "server_name": None,
            "settings": None,
            "localdb_enabled": None,
            "probe": {step: None for step in PROBE_FIELDS},
            "user": None,
        }

    def line(self, status: str, check: str, message: str) -> None:
        """Records a finding (status OK, WARN or FAIL) or an information line (status "").

        Values in ``message`` that came from the command line, the config files
        or ma1sd must already have gone through ``printable``; should one have
        slipped through, the whole message is escaped, so that it can never
        forge a line or drive the terminal."""
        if not message.isprintable():
            message = printable(message, len(message))
        if status:
            self.checks.append({"status": status, "check": check, "message": message})
        if not self.as_json:
            print(("%-4s  %-9s  %s" % (status, check, message)).rstrip(), flush=True)

    def start_user(self, name: str) -> Dict[str, Any]:
        """Returns the ``user`` object of the JSON output, every field null but
        ``name`` and ``checked`` (false)."""
        user: Dict[str, Any] = dict.fromkeys(USER_FIELDS)
        user.update(name=name, checked=False)
        self.data["user"] = user
        return user

    def completed_data(self) -> Dict[str, Any]:
        """Returns the JSON data with every documented field, null where its step was not reached."""
        result = dict(self.data)
        settings = result.get("settings")
        rest = isinstance(settings, dict) and settings.get("backend") == "rest"
        probe: Dict[str, Any] = {}
        for step, fields in PROBE_FIELDS.items():
            found = (result.get("probe") or {}).get(step)
            if step == "http" and rest:
                fields = REST_HTTP_FIELDS
            probe[step] = None if found is None else dict(dict.fromkeys(fields), **found)
        result["probe"] = probe
        if result.get("user") is not None:
            result["user"] = dict(dict.fromkeys(USER_FIELDS), **result["user"])
        return result

    def finish(self, exit_code: int) -> None:
        """Prints the result line, or the whole JSON object."""
        warnings = [c["check"] + ": " + c["message"] for c in self.checks if c["status"] == WARN]
        errors = [c["check"] + ": " + c["message"] for c in self.checks if c["status"] == FAIL]
        if self.as_json:
            result = self.completed_data()
            result.update(checks=self.checks, warnings=warnings, errors=errors, exit_code=exit_code)
            # ensure_ascii escapes every control character and lone surrogate.
            print(json.dumps(result, indent=2, ensure_ascii=True))
            return
        meaning = EXIT_MEANINGS.get(exit_code, "")
        if exit_code == EXIT_OK and warnings:
            meaning += " (%d warning%s)" % (len(warnings), "" if len(warnings) == 1 else "s")
        self.line(OK if exit_code == EXIT_OK else FAIL, "result", "%s: exit %d" % (meaning, exit_code))


def versions_text() -> str:
    """Returns the module's, Synapse's and Python's versions on one line."""
    return "rest_auth_provider %s, Synapse %s, Python %s" % (
        __version__,
        _synapse_version() or "(not installed)",
        sys.version.split()[0],
    )


def _synapse_version() -> Optional[str]:
    """Returns the installed Synapse's version (from its package metadata, so
    that Synapse is not imported), or None when ``import synapse`` would fail."""
    try:
        if importlib.util.find_spec("synapse") is None:
            return None
    except (ImportError, ValueError):
        return None
    try:
        return importlib_metadata.version("matrix-synapse")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def format_ms(seconds: float) -> str:
    """Returns a duration in milliseconds, for humans."""
    ms = seconds * 1000
    return "%.1f ms" % ms if ms < 10 else "%.0f ms" % ms


def exception_text(e: BaseException) -> str:
    """Returns a short description of an exception, its type and message, fit for a terminal."""
    if isinstance(e, OSError) and e.strerror:
        return "%s: %s" % (printable(str(e.filename or type(e).__name__)), printable(e.strerror))
    text = str(e)
    return "%s: %s" % (type(e).__name__, printable(text)) if text else type(e).__name__


def quoted(value: str) -> str:
    """Returns ``value`` in double quotes, fit for a terminal (see ``printable``)."""
    return '"%s"' % printable(value)
