"""Unit tests of ``safetext``: what reaches a log line or a terminal."""

from typing import Any

import pytest

from rest_auth_provider.safetext import DEFAULT_LIMIT, printable, redact_url, shown_url

# -- printable ------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw,shown",
    [
        ("a\x1b[2Jb", "a\\x1b[2Jb"),  # ESC: repaints the terminal
        ("a\x08b", "a\\x08b"),  # BS: hides what came before
        ("a\x07b", "a\\x07b"),  # BEL
        ("a\x00b", "a\\x00b"),  # NUL
        ("a\rb", "a\\x0db"),  # CR: overwrites the line
        ("a\nOK forged exit 0", "a\\x0aOK forged exit 0"),  # LF: forges a line
        ("a\tb", "a\\x09b"),
        ("a\x7fb", "a\\x7fb"),  # DEL
        ("a\x85b", "a\\x85b"),  # NEL, a C1 line break
        ("evil\u202etxt.exe", "evil\\u202etxt.exe"),  # right-to-left override
        ("a\u2028b", "a\\u2028b"),  # line separator
        ("a\u200bb", "a\\u200bb"),  # zero-width space
        ("Eve \ud800 Smith", "Eve \\ud800 Smith"),  # lone surrogate: cannot even be printed raw
        ("a\U000e0001b", "a\\U000e0001b"),  # language tag, a format character beyond the BMP
    ],
)
def test_printable_escapes_what_a_terminal_or_log_would_obey(raw: str, shown: str) -> None:
    assert printable(raw) == shown
    assert printable(raw).isprintable()
    assert "\n" not in printable(raw)


@pytest.mark.parametrize(
    "text",
    ["Alice Liddell", "Zoë Ødegård", "Иван", "李小龍", "مرحبا", "emoji 😀 ok", "ſam@example.org", "a b  c", ""],
)
def test_printable_keeps_ordinary_text(text: str) -> None:
    assert printable(text) == text


def test_printable_doubles_backslashes_so_escapes_cannot_be_faked() -> None:
    # Otherwise a backend could send the six characters "\x0a" and look like an escaped newline.
    assert printable("a\\x0ab") == "a\\\\x0ab"
    assert printable("a\\x0ab") != printable("a\nb")


def test_printable_cuts_long_text() -> None:
    assert printable("x" * DEFAULT_LIMIT) == "x" * DEFAULT_LIMIT
    assert printable("x" * (DEFAULT_LIMIT + 1)) == "x" * DEFAULT_LIMIT + "..."
    assert printable("y" * 10_000_000) == "y" * DEFAULT_LIMIT + "..."
    assert printable("abcdef", limit=3) == "abc..."
    # The limit counts characters of the input, before escaping.
    assert printable("\x1b" * 5, limit=2) == "\\x1b\\x1b..."


@pytest.mark.parametrize("value,shown", [(None, "<NoneType>"), (5, "<int>"), (b"a\nb", "<bytes>"), (["x"], "<list>")])
def test_printable_shows_other_types_by_name(value: Any, shown: str) -> None:
    assert printable(value) == shown


# -- redact_url / shown_url -----------------------------------------------------------


@pytest.mark.parametrize(
    "password", ["Pa55#w0rd!", "Pa55/w0rd", "Pa55?w0rd", "Pa55@w0rd", "Pa55%23w0rd", "Pa55#?/@w0rd", "Pa55:w0rd"]
)
@pytest.mark.parametrize(
    "template,expected",
    [
        ("http://svc:{pw}@ma1sd.internal:8090", "http://***@ma1sd.internal:8090"),
        ("https://svc:{pw}@ma1sd.internal:8090/base?x=1#f", "https://***@ma1sd.internal:8090/base?x=1#f"),
        ("http://{pw}@h:1", "http://***@h:1"),
        ("svc:{pw}@h:1/p", "***@h:1/p"),
    ],
)
def test_redact_url_hides_any_password(template: str, expected: str, password: str) -> None:
    url = template.format(pw=password)
    for shown in (redact_url(url), shown_url(url)):
        assert shown == expected
        assert "Pa55" not in shown
        assert "w0rd" not in shown


@pytest.mark.parametrize(
    "url",
    [
        "http://ma1sd.internal:8090",
        "https://ma1sd:8090/base/_matrix-internal/identity/v1/check_credentials",
        "http://[::1]:8090/a?b=c#d",
        "ma1sd:8090/path",
        "/relative/path",
        "",
    ],
)
def test_redact_url_leaves_urls_without_credentials_alone(url: str) -> None:
    assert redact_url(url) == url
    assert shown_url(url) == url


def test_shown_url_escapes_and_cuts() -> None:
    assert shown_url("http://u:pw@h:1/\x1b[2J\nOK") == "http://***@h:1/\\x1b[2J\\x0aOK"
    assert shown_url("http://h/" + "a" * 500) == ("http://h/" + "a" * 500)[:DEFAULT_LIMIT] + "..."
    assert shown_url("http://h/abc", limit=8) == "http://h..."
