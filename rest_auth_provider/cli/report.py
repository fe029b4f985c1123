"""Findings and results of ``check``: exit codes, the Report that prints them
as text lines or one JSON object, and small formatting helpers."""

import json
from typing import Any, Dict, List, Optional

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
            "probe": {},
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

    def finish(self, exit_code: int) -> None:
        """Prints the result line, or the whole JSON object."""
        warnings = [c["check"] + ": " + c["message"] for c in self.checks if c["status"] == WARN]
        errors = [c["check"] + ": " + c["message"] for c in self.checks if c["status"] == FAIL]
        if self.as_json:
            result = dict(self.data)
            result.update(checks=self.checks, warnings=warnings, errors=errors, exit_code=exit_code)
            # ensure_ascii escapes every control character and lone surrogate.
            print(json.dumps(result, indent=2, ensure_ascii=True))
            return
        meaning = EXIT_MEANINGS.get(exit_code, "")
        if exit_code == EXIT_OK and warnings:
            meaning += " (%d warning%s)" % (len(warnings), "" if len(warnings) == 1 else "s")
        self.line(OK if exit_code == EXIT_OK else FAIL, "result", "%s: exit %d" % (meaning, exit_code))


def _synapse_version() -> Optional[str]:
    """Returns the installed Synapse's version, or None when Synapse is not importable."""
    try:
        import synapse
    except ImportError:
        return None
    return str(getattr(synapse, "__version__", "unknown"))


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
