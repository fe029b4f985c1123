"""Unit tests of ``parse_login_name``: what a client typed, as a user ID on this server."""

import dataclasses
from typing import Any

import pytest

from rest_auth_provider.users import MAX_USER_ID_LENGTH, LocalRefusal, LoginName, parse_login_name

SERVER = "example.org"


@pytest.mark.parametrize(
    "raw", ["alice", "Alice", "ALICE", "@alice:example.org", "@Alice:EXAMPLE.ORG", "@ALICE:Example.Org"]
)
def test_all_forms_name_the_same_user(raw: str) -> None:
    name = parse_login_name(raw, SERVER)
    assert name == LoginName(localpart="alice", user_id="@alice:example.org", registrable=True)


def test_server_name_with_port() -> None:
    name = parse_login_name("@Bob:Matrix.Example.org:8448", "matrix.example.org:8448")
    assert name.localpart == "bob"
    assert name.user_id == "@bob:matrix.example.org:8448"


def test_user_id_uses_configured_server_name_spelling() -> None:
    assert parse_login_name("@alice:EXAMPLE.ORG", SERVER).user_id == "@alice:example.org"


@pytest.mark.parametrize(
    "raw,reason",
    [
        ("@alice:other.org", "another server"),
        ("@alice:example.org.evil.com", "another server"),
        ("@alice:sub.example.org", "another server"),
        ("@alice:example.org:8448", "another server"),
        ("@alice:", "another server"),
        ("alice:example.org", "does not start with '@'"),
        (":alice", "does not start with '@'"),
        ("@alice", "without a server name"),
        ("@", "without a server name"),
        ("@:example.org", "empty user name"),
        ("", "no user name"),
    ],
)
def test_refused_forms(raw: str, reason: str) -> None:
    with pytest.raises(LocalRefusal, match=reason):
        parse_login_name(raw, SERVER)


@pytest.mark.parametrize("raw", [None, 42, 1.5, True, b"alice", ["alice"], {"user": "alice"}])
def test_non_strings_are_refused(raw: Any) -> None:
    with pytest.raises(LocalRefusal, match="no user name"):
        parse_login_name(raw, SERVER)


@pytest.mark.parametrize("raw", ["alicé", "@alicé:example.org", "аlice", "ａｌｉｃｅ", "alice\u200b", "🦊"])
def test_non_ascii_is_refused(raw: str) -> None:
    # "аlice" starts with a Cyrillic a: a look-alike must not reach ma1sd.
    with pytest.raises(LocalRefusal, match="not ASCII"):
        parse_login_name(raw, SERVER)


@pytest.mark.parametrize(
    "raw", ["al ice", " alice", "alice ", "@al ice:example.org", "alice\t", "alice\n", "al\x00ice", "al\x7fice"]
)
def test_spaces_and_control_characters_are_refused(raw: str) -> None:
    with pytest.raises(LocalRefusal, match="cannot have"):
        parse_login_name(raw, SERVER)


def test_longest_user_id_is_accepted() -> None:
    longest = "a" * (MAX_USER_ID_LENGTH - len("@:example.org"))
    name = parse_login_name(longest, SERVER)
    assert len(name.user_id) == MAX_USER_ID_LENGTH
    assert name.localpart == longest


@pytest.mark.parametrize("length", [MAX_USER_ID_LENGTH - len("@:example.org") + 1, 256, 1000])
def test_too_long_is_refused(length: int) -> None:
    with pytest.raises(LocalRefusal, match="longer than 255"):
        parse_login_name("a" * length, SERVER)
    with pytest.raises(LocalRefusal, match="longer than 255"):
        parse_login_name("@%s:%s" % ("a" * length, SERVER), SERVER)


@pytest.mark.parametrize(
    "raw,localpart",
    [
        ("al!ce", "al!ce"),
        ("Al!ce", "al!ce"),
        ("_alice", "_alice"),
        ("_Alice", "_alice"),
        ("alice#1", "alice#1"),
        ("al@ice", "al@ice"),
        ("@al@ice:example.org", "al@ice"),
        ("a~b", "a~b"),
        ("a'b", "a'b"),
        ("a[b]", "a[b]"),
        ('a"b', 'a"b'),
    ],
)
def test_historical_names_are_accepted_but_not_registrable(raw: str, localpart: str) -> None:
    name = parse_login_name(raw, SERVER)
    assert name.localpart == localpart
    assert name.user_id == "@%s:%s" % (localpart, SERVER)
    assert name.registrable is False


@pytest.mark.parametrize(
    "raw", ["alice", "a.b", "a_b", "a=b", "a/b", "a+b", "a-b", "0123456789", "abcdefghijklmnopqrstuvwxyz", "a_", "."]
)
def test_registrable_names(raw: str) -> None:
    name = parse_login_name(raw, SERVER)
    assert name.localpart == raw
    assert name.registrable is True


def test_uppercase_is_registrable_once_lowercased() -> None:
    name = parse_login_name("Alice.Smith", SERVER)
    assert name.localpart == "alice.smith"
    assert name.registrable is True


def test_every_registrable_character() -> None:
    for char in "abcdefghijklmnopqrstuvwxyz0123456789._=/+-":
        assert parse_login_name("a" + char, SERVER).registrable is True, char
    for code in range(0x21, 0x7F):
        char = chr(code)
        if char == ":" or char.lower() in "abcdefghijklmnopqrstuvwxyz0123456789._=/+-":
            continue
        name = parse_login_name("a" + char, SERVER)
        assert name.registrable is False, char


def test_login_name_is_immutable() -> None:
    name = parse_login_name("alice", SERVER)
    with pytest.raises(dataclasses.FrozenInstanceError):
        name.localpart = "bob"  # type: ignore[misc]
