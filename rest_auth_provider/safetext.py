"""Text that is safe to put in a log line or on a terminal.

Whatever a client typed or a backend sent may hold control characters (ESC
sequences that repaint a terminal, CR/LF that forge a log line, NUL) or, in a
URL, credentials. Every such value goes through :func:`printable` or
:func:`redact_url` before it is logged or printed. Nothing here needs Synapse.
"""

from typing import Any

DEFAULT_LIMIT = 200


def printable(value: Any, limit: int = DEFAULT_LIMIT) -> str:
    """Returns ``value`` as one line of printable text: characters that are not
    printable (control and format characters, separators other than the space,
    lone surrogates) become ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN`` escapes,
    a backslash becomes ``\\\\``, and text longer than ``limit`` characters is
    cut with ``...``. A value that is not a string is shown by its type name."""
    if not isinstance(value, str):
        return "<%s>" % type(value).__name__
    cut = len(value) > limit
    if cut:
        value = value[:limit]
    out = []
    for c in value:
        if c == "\\":
            out.append("\\\\")
        elif c == " " or c.isprintable():
            out.append(c)
        else:
            code = ord(c)
            if code < 0x100:
                out.append("\\x%02x" % code)
            elif code < 0x10000:
                out.append("\\u%04x" % code)
            else:
                out.append("\\U%08x" % code)
    return "".join(out) + ("..." if cut else "")


def redact_url(url: str) -> str:
    """Returns ``url`` with any credentials in it (``user:password@``) replaced
    by ``***@``. Everything between ``://`` and the last ``@`` is treated as
    credentials, whatever characters the password holds (``#``, ``?``, ``/``,
    ``@``), so a URL is never shown with a secret in it; a URL without ``@``
    is returned unchanged."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" not in rest:
        return url
    return "%s%s***@%s" % (scheme, sep, rest.rsplit("@", 1)[1])


def shown_url(url: str, limit: int = DEFAULT_LIMIT) -> str:
    """Returns ``url`` fit for a log line or a terminal: credentials redacted,
    control characters escaped."""
    return printable(redact_url(url), limit)
