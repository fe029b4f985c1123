"""Unit and property-based tests of reading ma1sd's replies."""

import json
import math
import unicodedata
from typing import Any, Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rest_auth_provider.response import (
    MAX_DISPLAYNAME_LENGTH,
    SUPPORTED_MEDIA,
    AuthReply,
    MalformedReply,
    StoreUserId,
    ThreePid,
    canonical_threepid,
    clean_display_name,
    decode_json,
    parse_check_credentials,
    parse_lookup,
    parse_rest_auth,
    parse_rest_lookup,
    parse_store_id,
    untrusted_threepid_reason,
)

# -- exact ma1sd shapes ---------------------------------------------------------

MA1SD_SUCCESS: Dict[str, Any] = {
    "auth": {
        "success": True,
        "id": {"type": "localpart", "value": "alice"},
        "display_name": "Alice Liddell",
        "profile": {
            "display_name": "Alice Liddell",
            "three_pids": [
                {"medium": "email", "address": "alice@example.org"},
                {"medium": "msisdn", "address": "353851234567"},
            ],
        },
    }
}
MA1SD_FAILURE: Dict[str, Any] = {"auth": {"success": False, "profile": {"three_pids": []}}}


def success(profile: Any = None, **auth: Any) -> Dict[str, Any]:
    """Returns a successful reply with ``profile`` (left out when None) and extra ``auth`` keys."""
    body: Dict[str, Any] = {"success": True}
    if profile is not None:
        body["profile"] = profile
    body.update(auth)
    return {"auth": body}


def test_ma1sd_success_reply() -> None:
    reply = parse_check_credentials(MA1SD_SUCCESS)
    assert reply == AuthReply(
        success=True,
        display_name="Alice Liddell",
        three_pids=(ThreePid("email", "alice@example.org"), ThreePid("msisdn", "353851234567")),
    )


def test_ma1sd_success_reply_from_bytes() -> None:
    body = json.dumps(MA1SD_SUCCESS).encode("utf-8")
    assert parse_check_credentials(decode_json(body)) == parse_check_credentials(MA1SD_SUCCESS)


def test_ma1sd_failure_reply() -> None:
    assert parse_check_credentials(MA1SD_FAILURE) == AuthReply(success=False)
    reply = parse_check_credentials(decode_json(b'{"auth":{"success":false,"profile":{"three_pids":[]}}}'))
    assert reply.success is False
    assert reply.display_name is None
    assert reply.three_pids is None


@pytest.mark.parametrize(
    "auth",
    [
        {"success": False},
        {"success": False, "profile": "garbage"},
        {"success": False, "profile": {"three_pids": "garbage", "display_name": 5}},
        {"success": False, "display_name": ["x"]},
    ],
)
def test_failure_ignores_the_rest(auth: Dict[str, Any]) -> None:
    # A refusal is a refusal: nothing else in it is read.
    assert parse_check_credentials({"auth": auth}) == AuthReply(success=False)


@pytest.mark.parametrize("profile", [None, {}])
def test_missing_profile_is_ok(profile: Any) -> None:
    value: Dict[str, Any] = {"auth": {"success": True}}
    if profile is not None:
        value["auth"]["profile"] = profile
    assert parse_check_credentials(value) == AuthReply(success=True, display_name=None, three_pids=None)


def test_null_profile_is_ok() -> None:
    assert parse_check_credentials({"auth": {"success": True, "profile": None}}) == AuthReply(success=True)


def test_three_pids_missing_is_none_but_empty_list_is_empty_tuple() -> None:
    assert parse_check_credentials(success({"display_name": "A"})).three_pids is None
    assert parse_check_credentials(success({"three_pids": None})).three_pids is None
    assert parse_check_credentials(success({"three_pids": []})).three_pids == ()


def test_three_pids_medium_lowercased_and_fields_stripped() -> None:
    reply = parse_check_credentials(
        success(
            {"three_pids": [{"medium": " EMAIL ", "address": " Alice@Example.org "}, {"medium": "m", "address": ""}]}
        )
    )
    assert reply.three_pids == (ThreePid("email", "Alice@Example.org"), ThreePid("m", ""))


def test_three_pids_extra_keys_ignored() -> None:
    pid = {"medium": "email", "address": "a@b.c", "validated_at": 1, "added_at": 2}
    assert parse_check_credentials(success({"three_pids": [pid]})).three_pids == (ThreePid("email", "a@b.c"),)


def test_display_name_falls_back_to_legacy_copy() -> None:
    assert parse_check_credentials(success(None, display_name="Legacy")).display_name == "Legacy"
    assert parse_check_credentials(success({}, display_name="Legacy")).display_name == "Legacy"
    assert parse_check_credentials(success({"display_name": None}, display_name="Legacy")).display_name == "Legacy"
    assert parse_check_credentials(success({"display_name": "  "}, display_name="Legacy")).display_name == "Legacy"


def test_profile_display_name_wins_over_legacy_copy() -> None:
    reply = parse_check_credentials(success({"display_name": "Profile"}, display_name="Legacy"))
    assert reply.display_name == "Profile"


@pytest.mark.parametrize(
    "blank", ["", " ", "\t\n", "\u3000", None, "\x00\x1b", "\u202e\u2066", "\ud800", " \x85 \u2028"]
)
def test_blank_display_name_is_none(blank: Optional[str]) -> None:
    assert parse_check_credentials(success({"display_name": blank}, display_name=blank)).display_name is None


@pytest.mark.parametrize("unusable", ["\x00\x1b", "\u202e", "\ud800", "\r\n"])
def test_display_name_with_nothing_usable_falls_back_to_legacy_copy(unusable: str) -> None:
    reply = parse_check_credentials(success({"display_name": unusable}, display_name="Legacy \u202eName"))
    assert reply.display_name == "Legacy Name"


def test_display_name_with_lone_surrogate_from_the_wire() -> None:
    # The \ud800 escape decodes to a lone surrogate, which Synapse cannot store.
    body = b'{"auth": {"success": true, "profile": {"display_name": "Eve \\ud800 Smith"}}}'
    reply = parse_check_credentials(decode_json(body))
    assert reply.display_name == "Eve Smith"
    reply.display_name.encode("utf-8")


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("Eve \ud800 Smith", "Eve Smith"),
        ("Eve\udfffSmith", "EveSmith"),
        ("A\nB", "A B"),
        ("A\r\nB", "A B"),
        ("A\tB\vC\fD", "A B C D"),
        ("A\x85B\u2028C\u2029D", "A B C D"),
        ("\u202eevil", "evil"),
        ("a\u202ab\u202bc\u202cd\u202de\u2066f\u2067g\u2068h\u2069i", "abcdefghi"),
        ("\x00\x1b", None),
        ("Mallory\x1b[2J\x07\x08\x7f", "Mallory[2J"),
        ("Bob\x00by", "Bobby"),
        ("A\x9bB", "AB"),  # C1 control (CSI)
        ("A\x1c\x1d\x1e\x1fB", "AB"),  # Cc although Python calls them white space
        ("  A  \u3000 B\u00a0 ", "A B"),
        ("Zoë 🦊 Ñandú", "Zoë 🦊 Ñandú"),
        ("👩\u200d👩\u200d👧", "👩\u200d👩\u200d👧"),  # ZWJ kept: emoji sequences need it
        ("李小龍", "李小龍"),
        ("مريم", "مريم"),
        ("שרה\u200f", "שרה\u200f"),  # a right-to-left mark is not an override
        ("", None),
        ("   ", None),
    ],
)
def test_clean_display_name(raw: str, expected: Optional[str]) -> None:
    assert clean_display_name(raw) == expected
    assert parse_check_credentials(success({"display_name": raw})).display_name == expected


def test_clean_display_name_cuts_after_cleaning() -> None:
    assert clean_display_name("\x00" * 300 + "A") == "A"
    assert clean_display_name("A\n" * 200) == ("A " * 128).strip()
    assert clean_display_name("x" * 255 + " y") == "x" * 255


def test_display_name_is_stripped() -> None:
    assert parse_check_credentials(success({"display_name": "  Alice  "})).display_name == "Alice"


@pytest.mark.parametrize("length", [256, 257, 1000])
def test_long_display_name_is_truncated(length: int) -> None:
    name = "é" * length
    reply = parse_check_credentials(success({"display_name": name}))
    assert reply.display_name == "é" * min(length, MAX_DISPLAYNAME_LENGTH)
    legacy = parse_check_credentials(success(None, display_name=name))
    assert legacy.display_name == reply.display_name


def test_unicode_display_name_kept() -> None:
    name = "Zoë 🦊 Ñandú"
    assert parse_check_credentials(success({"display_name": name})).display_name == name


# -- wrong shapes -------------------------------------------------------------


@pytest.mark.parametrize("value", [None, True, 1, 1.5, "auth", [], [MA1SD_SUCCESS]])
def test_reply_must_be_an_object(value: Any) -> None:
    with pytest.raises(MalformedReply, match="reply is"):
        parse_check_credentials(value)


@pytest.mark.parametrize("auth", [None, True, 1, "yes", [], [{"success": True}]])
def test_auth_must_be_an_object(auth: Any) -> None:
    with pytest.raises(MalformedReply, match="'auth'"):
        parse_check_credentials({"auth": auth})


def test_auth_missing() -> None:
    with pytest.raises(MalformedReply, match="'auth'"):
        parse_check_credentials({"success": True})


@pytest.mark.parametrize("value", ["true", "True", 1, 1.0, 0, None, [], {}, [True]])
def test_success_must_be_a_boolean(value: Any) -> None:
    with pytest.raises(MalformedReply, match="'auth.success'"):
        parse_check_credentials({"auth": {"success": value, "profile": {}}})


def test_success_missing() -> None:
    with pytest.raises(MalformedReply, match="'auth.success'"):
        parse_check_credentials({"auth": {"profile": {"display_name": "A"}}})


@pytest.mark.parametrize("profile", [True, 1, "profile", [], [{"display_name": "A"}]])
def test_profile_must_be_an_object(profile: Any) -> None:
    with pytest.raises(MalformedReply, match="'auth.profile'"):
        parse_check_credentials(success(profile))


def test_false_profile_is_refused() -> None:
    with pytest.raises(MalformedReply, match="'auth.profile'"):
        parse_check_credentials({"auth": {"success": True, "profile": False}})


@pytest.mark.parametrize("name", [1, True, ["A"], {"first": "A"}])
def test_profile_display_name_must_be_a_string(name: Any) -> None:
    with pytest.raises(MalformedReply, match="'auth.profile.display_name'"):
        parse_check_credentials(success({"display_name": name}, display_name="Legacy"))


@pytest.mark.parametrize("name", [1, False, ["A"], {"first": "A"}])
def test_legacy_display_name_must_be_a_string(name: Any) -> None:
    with pytest.raises(MalformedReply, match="'auth.display_name'"):
        parse_check_credentials(success({}, display_name=name))


@pytest.mark.parametrize("pids", [True, 0, "email", {"medium": "email", "address": "a@b.c"}])
def test_three_pids_must_be_a_list(pids: Any) -> None:
    with pytest.raises(MalformedReply, match="'auth.profile.three_pids'"):
        parse_check_credentials(success({"three_pids": pids}))


@pytest.mark.parametrize(
    "entry",
    [
        None,
        "a@b.c",
        ["email", "a@b.c"],
        {},
        {"medium": "email"},
        {"address": "a@b.c"},
        {"medium": None, "address": "a@b.c"},
        {"medium": "email", "address": None},
        {"medium": 1, "address": "a@b.c"},
        {"medium": "email", "address": ["a@b.c"]},
    ],
)
def test_three_pid_entries_need_string_medium_and_address(entry: Any) -> None:
    good = {"medium": "email", "address": "x@y.z"}
    with pytest.raises(MalformedReply, match=r"three_pids\[1\]"):
        parse_check_credentials(success({"three_pids": [good, entry]}))


def test_malformed_messages_do_not_echo_values() -> None:
    # The message goes to logs; a display name or address can be personal data.
    with pytest.raises(MalformedReply) as info:
        parse_check_credentials(success({"three_pids": [{"medium": "email", "address": 12345678}]}))
    assert "12345678" not in str(info.value)


# -- lookup -------------------------------------------------------------------


def test_lookup_found() -> None:
    reply = {
        "address": "alice@example.org",
        "medium": "email",
        "mxid": "@alice:example.org",
        "not_before": 0,
        "not_after": 9999999999999,
        "ts": 1,
        "signatures": {"ma1sd": {"ed25519:0": "sig"}},
    }
    assert parse_lookup(reply) == "@alice:example.org"


@pytest.mark.parametrize("value", [{}, {"mxid": None}, {"address": "a@b.c", "medium": "email"}])
def test_lookup_not_found(value: Dict[str, Any]) -> None:
    assert parse_lookup(value) is None


@pytest.mark.parametrize("value", [None, [], "@alice:example.org", 1, True])
def test_lookup_reply_must_be_an_object(value: Any) -> None:
    with pytest.raises(MalformedReply, match="lookup reply"):
        parse_lookup(value)


@pytest.mark.parametrize("mxid", [1, True, False, ["@a:b"], {"id": "@a:b"}])
def test_lookup_mxid_must_be_a_string(mxid: Any) -> None:
    with pytest.raises(MalformedReply, match="'mxid'"):
        parse_lookup({"mxid": mxid})


# -- decode_json --------------------------------------------------------------


@pytest.mark.parametrize(
    "body,expected",
    [
        (b"{}", {}),
        (b'{"a": [1, 2.5, null, true, "x"]}', {"a": [1, 2.5, None, True, "x"]}),
        (b'"\\u00e9"', "\u00e9"),
        ('{"name": "Zoë"}'.encode(), {"name": "Zoë"}),
        (b"  [ ]  ", []),
    ],
)
def test_decode_json(body: bytes, expected: Any) -> None:
    assert decode_json(body) == expected


@pytest.mark.parametrize(
    "body",
    [b"NaN", b"-Infinity", b"Infinity", b'{"auth": {"success": NaN}}', b"[1, Infinity]", b'{"x": -Infinity}'],
)
def test_decode_json_refuses_nan_and_infinity(body: bytes) -> None:
    with pytest.raises(MalformedReply, match="not JSON"):
        decode_json(body)


@pytest.mark.parametrize("body", [b"", b"{", b"{'a': 1}", b"nul", b"[1,]", b"{} {}", b"<html>", b"\xef\xbb\xbf{}"])
def test_decode_json_refuses_non_json(body: bytes) -> None:
    with pytest.raises(MalformedReply, match="not JSON"):
        decode_json(body)


@pytest.mark.parametrize(
    "body", [b"\xff", b'{"a": "\xe9"}', '{"a": "é"}'.encode("latin-1"), b"\xed\xa0\x80", "{}".encode("utf-16")]
)
def test_decode_json_refuses_non_utf8(body: bytes) -> None:
    with pytest.raises(MalformedReply, match="not UTF-8"):
        decode_json(body)


def test_decode_json_deep_nesting() -> None:
    with pytest.raises(MalformedReply):
        decode_json(b"[" * 200000 + b"]" * 200000)


@pytest.mark.parametrize(
    "body,key",
    [
        # Depth 1, 2, and inside a 3PID entry.
        (b'{"auth": {"success": false}, "auth": {"success": true}}', "auth"),
        (b'{"auth": {"success": false, "success": true}}', "success"),
        (
            b'{"auth": {"success": true, "profile": {"three_pids": '
            b'[{"medium": "email", "address": "a@b.c", "address": "sam@example.org"}]}}}',
            "address",
        ),
        (b'{"mxid": "@a:b", "mxid": "@c:d"}', "mxid"),
        # Equal once decoded.
        (b'{"success": true, "\\u0073uccess": false}', "success"),
        (b'[1, {"a": {"b": [{"k": 1, "k": 1}]}}]', "k"),
    ],
)
def test_decode_json_refuses_duplicate_keys(body: bytes, key: str) -> None:
    with pytest.raises(MalformedReply) as info:
        decode_json(body)
    assert str(info.value) == "reply has a duplicate key '%s'" % key


def test_duplicate_key_message_escapes_the_key_and_shows_no_value() -> None:
    with pytest.raises(MalformedReply) as info:
        decode_json(b'{"x\\u001b[2J\\n": "secret-value", "x\\u001b[2J\\n": "other-value"}')
    message = str(info.value)
    assert message == "reply has a duplicate key 'x\\x1b[2J\\x0a'"
    assert "value" not in message


def test_same_key_in_different_objects_is_fine() -> None:
    assert decode_json(b'{"a": {"a": 1}, "b": [{"a": 2}, {"a": 3}]}') == {"a": {"a": 1}, "b": [{"a": 2}, {"a": 3}]}


# -- canonical_threepid -------------------------------------------------------


@pytest.mark.parametrize(
    "address,expected",
    [
        ("alice@example.org", "alice@example.org"),
        ("Alice@Example.ORG", "alice@example.org"),
        ("  ALICE@EXAMPLE.ORG\n", "alice@example.org"),
        ("Straße@Example.org", "strasse@example.org"),
        ("A.B+Tag@Sub.Example.Org", "a.b+tag@sub.example.org"),
    ],
)
def test_canonical_email(address: str, expected: str) -> None:
    assert canonical_threepid("email", address) == ("email", expected)
    assert canonical_threepid("EMAIL", address) == ("email", expected)


@pytest.mark.parametrize(
    "address", ["", " ", "alice", "alice@", "@example.org", "a@b@c", "al ice@example.org", "alice@exa\tmple.org", "@"]
)
def test_garbage_email_is_none(address: str) -> None:
    assert canonical_threepid("email", address) is None


@pytest.mark.parametrize(
    "address,folded",
    [
        ("\u017fam@example.org", "sam@example.org"),  # LATIN SMALL LETTER LONG S
        ("bo\u00df@example.org", "boss@example.org"),
        ("ada@\u212aexample.org", "ada@kexample.org"),  # KELVIN SIGN
        ("JOS\u00c9@x.org", "jos\u00e9@x.org"),  # É folds: not ASCII case
        ("\u0130nci@x.org", "i\u0307nci@x.org"),
    ],
)
def test_look_alike_email_from_ma1sd_is_not_stored(address: str, folded: str) -> None:
    # canonical_threepid still says what Synapse would store (also used for what clients type) ...
    assert canonical_threepid("email", address) == ("email", folded)
    # ... but ma1sd's text is not that address, so it is not stored.
    assert untrusted_threepid_reason("email", address) == "folds to %s, which is not the address as sent" % folded
    assert untrusted_threepid_reason("EMAIL", address) is not None


@pytest.mark.parametrize(
    "address",
    ["jos\u00e9@x.org", "Alice@Example.ORG", "alice@example.org", " BOB@EXAMPLE.ORG ", "a.b+tag@sub.example.org"],
)
def test_email_equal_up_to_ascii_case_is_stored(address: str) -> None:
    assert untrusted_threepid_reason("email", address) is None


@pytest.mark.parametrize(
    "address", ["sam\u200b@example.org", "sam\u00ad@example.org", "a\x00b@x.org", "a\x1b[2J@x.org", "\u202egro@x.org"]
)
def test_email_with_invisible_or_control_characters_is_not_stored(address: str) -> None:
    assert untrusted_threepid_reason("email", address) == "holds a control or invisible character"


@pytest.mark.parametrize("address", ["", "alice", "a@b@c", "al ice@x.org"])
def test_unusable_email_is_not_stored(address: str) -> None:
    assert untrusted_threepid_reason("email", address) == "is not an email address"


def test_untrusted_reason_escapes_what_it_shows() -> None:
    reason = untrusted_threepid_reason("email", "\u017fa\\m@x.org")
    assert reason == "folds to sa\\\\m@x.org, which is not the address as sent"


@pytest.mark.parametrize(
    "medium,address", [("msisdn", "+44 (0) 7700 900999"), ("msisdn", "garbage"), ("x", "\u017f@x")]
)
def test_untrusted_reason_is_none_for_other_media(medium: str, address: str) -> None:
    assert untrusted_threepid_reason(medium, address) is None


@pytest.mark.parametrize(
    "address",
    [
        # One number, every spelling: what a client may type, what ma1sd may list.
        "447700900999",
        "+447700900999",
        "+44 7700 900999",
        "+44 (0) 7700 900999",  # the (0) is the UK trunk prefix, not part of the number
        "+44 (0)7700 900999",
        "+44 0 7700 900999",
        "0044 7700 900999",
        "00 44 7700 900999",
        "44 7700900999",
        "(44)7700900999",
        "4-4-7-7-0-0-9-0-0-9-9-9",
        "+44.7700.900.999",
        "+44/7700/900999",
        "  +44 7700 900999\n",
        "4407700900999",  # what 1.0.0 stored for "+44 (0) 7700 900999"
    ],
)
def test_canonical_msisdn_spellings_of_one_number(address: str) -> None:
    assert canonical_threepid("msisdn", address) == ("msisdn", "447700900999")
    assert canonical_threepid("MSISDN", address) == ("msisdn", "447700900999")


@pytest.mark.parametrize(
    "address,expected",
    [
        ("+1 555 123 4567", "15551234567"),
        ("+1 (555) 010-0199", "15550100199"),
        ("+353 85 123 4567", "353851234567"),
        ("+353 (0)85 123 4567", "353851234567"),
        ("353851234567", "353851234567"),
        ("+44 20 7946 0000", "442079460000"),
        ("+49 (0) 30 123456", "4930123456"),
        ("+39 06 1234 5678", "390612345678"),  # Italy keeps its leading zero
        ("3906 12345678", "390612345678"),
    ],
)
def test_canonical_msisdn(address: str, expected: str) -> None:
    assert canonical_threepid("msisdn", address) == ("msisdn", expected)
    assert canonical_threepid("msisdn", expected) == ("msisdn", expected)


@pytest.mark.parametrize(
    "address",
    [
        "",
        " ",
        "+",
        "()",
        "abc",
        "call me",
        "353-85-x",
        "1" * 25,
        "1" * 20,  # longer than any E.164 number
        "12345",  # no country has numbers this short
        "+0 123",  # no country code 0
        "085.123.4567",  # national format: the country is unknown
        "07700 900999",
        "+44 7700 900999 ext 9",  # an extension is not a phone of its own
        "+44 7700 900999 x9",
        "+44-7700-900999#",
        "+44 7700 900999;ext=9",
        "tel:+447700900999",
        "++447700900999",
        "+44+7700900999",
        "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669\u0660\u0661",  # Arabic-Indic digits
        "+\uff14\uff14 7700 900999",  # full-width digits
        "12\t34",
        "+44\n7700900999",
        "a@b.c",
    ],
)
def test_garbage_msisdn_is_none(address: str) -> None:
    assert canonical_threepid("msisdn", address) is None


@pytest.mark.parametrize("medium", ["phone", "matrix", "", "e-mail", " email"])
def test_other_media_are_none(medium: str) -> None:
    assert canonical_threepid(medium, "alice@example.org") is None
    assert canonical_threepid(medium, "353851234567") is None


# -- property-based tests -------------------------------------------------------

# Strings over the whole code point range plus characters the code treats
# specially, built without hypothesis's text() strategy, which caches Unicode
# tables under .hypothesis/ in the working tree.
_SPECIAL = list(" \t\n\u3000@+()-./0123456789aAzZ\u00e9\u00df\u0130")
TEXT = st.one_of(
    st.lists(st.sampled_from(_SPECIAL), max_size=12).map("".join),
    st.lists(st.integers(min_value=0, max_value=0x10FFFF), max_size=12).map(lambda codes: "".join(map(chr, codes))),
)
# Long names built by repetition: drawing 300 characters one by one is slow.
LONG_TEXT = st.one_of(
    TEXT,
    st.builds(lambda head, body, n, tail: head + body * n + tail, TEXT, TEXT, st.integers(0, 300), TEXT),
)
KEYS = st.one_of(
    st.sampled_from(["auth", "success", "profile", "display_name", "three_pids", "medium", "address", "mxid"]), TEXT
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT)
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=4)),
    max_leaves=8,
)
# Smaller values for the slots inside reply-shaped objects (cheaper to draw).
SMALL_JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(KEYS, children, max_size=3)),
    max_leaves=4,
)
# Values a JSON decoder can produce (no NaN or infinities).
STRICT_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), TEXT),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)),
    max_leaves=8,
)

SUCCESS_VALUES = st.one_of(
    st.just(True), st.just(False), st.sampled_from(["true", "True", 1, 1.0, 0, None, [True], {"": True}]), SMALL_JSON
)
MEDIUM = st.one_of(st.sampled_from(["email", "msisdn", "EMAIL", " msisdn "]), TEXT)
DISPLAY_NAME = st.one_of(st.none(), LONG_TEXT, SMALL_JSON)
THREE_PID = st.one_of(
    st.fixed_dictionaries({"medium": MEDIUM, "address": TEXT}),
    st.fixed_dictionaries(
        {}, optional={"medium": st.one_of(MEDIUM, SMALL_JSON), "address": st.one_of(TEXT, SMALL_JSON)}
    ),
    SMALL_JSON,
)
PROFILE = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={"display_name": DISPLAY_NAME, "three_pids": st.one_of(st.lists(THREE_PID, max_size=4), SMALL_JSON)},
    ),
    SMALL_JSON,
)
AUTH_SHAPED = st.fixed_dictionaries(
    {
        "auth": st.one_of(
            st.fixed_dictionaries(
                {}, optional={"success": SUCCESS_VALUES, "profile": PROFILE, "display_name": DISPLAY_NAME}
            ),
            SMALL_JSON,
        )
    }
)
REPLIES = st.one_of(JSON, AUTH_SHAPED)

# Replies that are well formed and grant the login.
GOOD_NAME = st.one_of(st.none(), LONG_TEXT)
GOOD_PIDS = st.lists(st.fixed_dictionaries({"medium": MEDIUM, "address": TEXT}), max_size=4)
GOOD_REPLIES = st.fixed_dictionaries(
    {"success": st.just(True)},
    optional={
        "display_name": GOOD_NAME,
        "profile": st.one_of(
            st.none(), st.fixed_dictionaries({}, optional={"display_name": GOOD_NAME, "three_pids": GOOD_PIDS})
        ),
    },
).map(lambda auth: {"auth": auth})

# The two parser properties run 1000 examples each (and the bytes properties
# 300, the rest 100): a few thousand generated replies in every tox
# environment, which keeps each environment's run short.
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]
PROPERTY_SETTINGS = settings(max_examples=1000, deadline=None, database=None, suppress_health_check=_HEALTH)
BYTES_SETTINGS = settings(max_examples=300, deadline=None, database=None, suppress_health_check=_HEALTH)
SMALL_SETTINGS = settings(max_examples=100, deadline=None, database=None, suppress_health_check=_HEALTH)


def _check_reply(reply: AuthReply) -> None:
    assert isinstance(reply, AuthReply)
    assert reply.display_name is None or (
        isinstance(reply.display_name, str) and 0 < len(reply.display_name) <= MAX_DISPLAYNAME_LENGTH
    )
    if reply.display_name is not None:
        assert reply.display_name == reply.display_name.strip()
        reply.display_name.encode("utf-8")
    assert reply.three_pids is None or isinstance(reply.three_pids, tuple)
    for pid in reply.three_pids or ():
        assert isinstance(pid, ThreePid)
        assert isinstance(pid.medium, str) and isinstance(pid.address, str)
    if not reply.success:
        assert reply == AuthReply(success=False)


def _granted(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("auth"), dict) and value["auth"].get("success") is True


@PROPERTY_SETTINGS
@given(REPLIES)
def test_parser_only_raises_malformed_and_grants_only_on_true(value: Any) -> None:
    try:
        reply = parse_check_credentials(value)
    except MalformedReply:
        return
    _check_reply(reply)
    assert reply.success is _granted(value)
    if reply.success:
        assert value["auth"]["success"] is True


@PROPERTY_SETTINGS
@given(AUTH_SHAPED)
def test_auth_shaped_replies(value: Dict[str, Any]) -> None:
    try:
        reply = parse_check_credentials(value)
    except MalformedReply:
        # Refused replies: anything but a well-formed object with a boolean success.
        auth = value["auth"]
        assert not (isinstance(auth, dict) and auth.get("success") is False)
        return
    _check_reply(reply)
    assert reply.success is (value["auth"]["success"] is True)


@SMALL_SETTINGS
@given(GOOD_REPLIES)
def test_well_formed_success_always_parses(value: Dict[str, Any]) -> None:
    reply = parse_check_credentials(value)
    _check_reply(reply)
    assert reply.success is True
    auth = value["auth"]
    profile = auth.get("profile") or {}

    def usable(name: Optional[str]) -> Optional[str]:
        return None if name is None else clean_display_name(name)

    expected_name = usable(profile.get("display_name"))
    if expected_name is None:
        expected_name = usable(auth.get("display_name"))
    assert reply.display_name == expected_name
    if "three_pids" in profile:
        assert reply.three_pids is not None
        assert [(p.medium, p.address) for p in reply.three_pids] == [
            (p["medium"].strip().lower(), p["address"].strip()) for p in profile["three_pids"]
        ]
    else:
        assert reply.three_pids is None


@SMALL_SETTINGS
@given(GOOD_REPLIES)
def test_well_formed_success_survives_the_wire(value: Dict[str, Any]) -> None:
    body = json.dumps(value).encode("utf-8")  # ensure_ascii: lone surrogates become escapes
    assert parse_check_credentials(decode_json(body)) == parse_check_credentials(value)


@SMALL_SETTINGS
@given(JSON)
def test_lookup_only_raises_malformed(value: Any) -> None:
    try:
        mxid = parse_lookup(value)
    except MalformedReply:
        return
    assert mxid is None or isinstance(mxid, str)
    assert isinstance(value, dict)
    assert mxid == value.get("mxid")


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    return False


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, list):
        return any(_has_nan(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    return False


_JSON_TOKENS = [
    b"{", b"}", b"[", b"]", b'"a"', b'"\\ud800"', b":", b",", b" ", b"1", b"-2.5e3 ", b"NaN", b"Infinity",
    b"-Infinity", b"true", b"false", b"null", b"\xff", b"\xc3\xa9", b'"', b"\\",
]  # fmt: skip
JSONISH_BYTES = st.lists(st.sampled_from(_JSON_TOKENS), max_size=20).map(b"".join)


@BYTES_SETTINGS
@given(st.binary(max_size=64))
def test_decode_json_on_arbitrary_bytes_only_raises_malformed(body: bytes) -> None:
    try:
        value = decode_json(body)
    except MalformedReply:
        return
    assert not _has_nan(value)
    assert value == json.loads(body.decode("utf-8"))


@BYTES_SETTINGS
@given(JSONISH_BYTES)
def test_decode_json_on_json_like_bytes(body: bytes) -> None:
    try:
        value = decode_json(body)
    except MalformedReply:
        return
    # No token sequence spells an out-of-range exponent, so every number is finite.
    assert not _has_non_finite(value)
    assert value == json.loads(body.decode("utf-8"))


@SMALL_SETTINGS
@given(STRICT_JSON)
def test_decode_json_round_trips(value: Any) -> None:
    assert decode_json(json.dumps(value).encode("utf-8")) == value
    text = json.dumps(value, ensure_ascii=False)
    if not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        assert decode_json(text.encode("utf-8")) == value


ADDRESSES = st.one_of(
    TEXT,
    st.lists(st.sampled_from(list("0123456789 +()-./@aZ\u00df\u0130\t")), max_size=24).map("".join),
    st.tuples(TEXT, TEXT).map("@".join),
)


@SMALL_SETTINGS
@given(st.one_of(MEDIUM, st.sampled_from(SUPPORTED_MEDIA)), ADDRESSES)
def test_canonical_threepid_properties(medium: str, address: str) -> None:
    result = canonical_threepid(medium, address)
    if result is None:
        return
    canon_medium, canon_address = result
    assert canon_medium == medium.lower()
    assert canon_medium in SUPPORTED_MEDIA
    if canon_medium == "msisdn":
        assert canon_address.isdigit() and canon_address.isascii() and 0 < len(canon_address) <= 20
    else:
        local, _, domain = canon_address.partition("@")
        assert canon_address.count("@") == 1 and local and domain
        assert not any(c.isspace() for c in canon_address)
    assert canonical_threepid(canon_medium, canon_address) == result


@SMALL_SETTINGS
@given(st.lists(st.sampled_from(list("0123456789 +()-./")), min_size=1, max_size=30).map("".join))
def test_msisdn_is_e164_digits_or_none(address: str) -> None:
    result = canonical_threepid("msisdn", address)
    if result is None:
        return
    digits = result[1]
    assert digits.isdigit() and digits.isascii() and len(digits) <= 15 and digits[0] != "0"
    assert canonical_threepid("msisdn", digits) == result
    assert canonical_threepid("msisdn", "+" + digits) == result


KNOWN_NUMBERS = ["447700900999", "15551234567", "353851234567", "390612345678", "4930123456", "33612345678"]


@SMALL_SETTINGS
@given(
    st.sampled_from(KNOWN_NUMBERS),
    st.sampled_from(["", "+", "00", "+ ", "00 "]),
    st.lists(st.sampled_from(["", "", " ", "-", ".", "/", " - "]), min_size=15, max_size=15),
)
def test_known_number_under_any_spelling(number: str, prefix: str, separators: List[str]) -> None:
    spelt = prefix + "".join(d + sep for d, sep in zip(number, separators)).rstrip(" -./")
    assert canonical_threepid("msisdn", spelt) == ("msisdn", number)


# Characters clean_display_name must never return.
def _forbidden(c: str) -> bool:
    return (
        unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") or 0x202A <= ord(c) <= 0x202E or 0x2066 <= ord(c) <= 0x2069
    )


_NAME_SPECIAL = list(
    "\t\n\r\v\f\x85\u2028\u2029 \u3000\u00a0\x00\x1b\x1f\x7f\x9b\u202a\u202e\u2066\u2069\u200d\ud800\udfffaZ\u00e9"
)
NAMES = st.one_of(
    LONG_TEXT,
    st.lists(st.sampled_from(_NAME_SPECIAL), max_size=40).map("".join),
    st.builds(lambda a, n, b: a * n + b, st.sampled_from(["ab ", "\x00", "x\n", "\ud800y"]), st.integers(0, 300), TEXT),
)


@PROPERTY_SETTINGS
@given(NAMES)
def test_clean_display_name_properties(name: str) -> None:
    cleaned = clean_display_name(name)
    if cleaned is None:
        assert not any(not c.isspace() and not _forbidden(c) for c in name)
        return
    assert 0 < len(cleaned) <= MAX_DISPLAYNAME_LENGTH
    assert not any(_forbidden(c) for c in cleaned)
    cleaned.encode("utf-8")
    assert cleaned == cleaned.strip() and "  " not in cleaned
    assert clean_display_name(cleaned) == cleaned
    # Nothing else is changed: every kept character was in the name, in order.
    kept = iter(name)
    assert all(c == " " or any(c == k for k in kept) for c in cleaned)


@SMALL_SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "success", "\u00e9", ""]), st.integers()), max_size=6))
def test_decode_json_refuses_exactly_the_objects_with_repeated_keys(pairs: List[Tuple[str, int]]) -> None:
    body = ("{" + ", ".join("%s: %d" % (json.dumps(k), v) for k, v in pairs) + "}").encode("utf-8")
    keys = [k for k, _ in pairs]
    if len(set(keys)) < len(keys):
        with pytest.raises(MalformedReply, match="duplicate key"):
            decode_json(body)
    else:
        assert decode_json(body) == dict(pairs)


# -- REST identity store replies (backend: rest) -------------------------------

# netsoc's iamd: a success, and Go's zero value for every refusal.
IAMD_SUCCESS: Dict[str, Any] = {
    "auth": {
        "success": True,
        "id": {"type": "localpart", "value": "alice"},
        "profile": {
            "display_name": "Alice Liddell",
            "three_pids": [{"medium": "email", "address": "alice@example.org"}],
        },
    }
}
IAMD_REFUSAL: Dict[str, Any] = {"auth": {"success": False, "id": {"type": "", "value": ""}, "profile": {}}}


def test_rest_success_reply_gives_the_profile_and_the_id() -> None:
    reply, store_id = parse_rest_auth(IAMD_SUCCESS)
    assert reply == AuthReply(
        success=True, display_name="Alice Liddell", three_pids=(ThreePid("email", "alice@example.org"),)
    )
    assert store_id == StoreUserId(type="localpart", value="alice")


def test_rest_refusal_ignores_the_zero_id() -> None:
    assert parse_rest_auth(IAMD_REFUSAL) == (AuthReply(success=False), None)
    assert parse_rest_auth({"auth": {"success": False}}) == (AuthReply(success=False), None)
    # Whatever id a refusal names, it grants nothing and is not read.
    assert parse_rest_auth({"auth": {"success": False, "id": 42}}) == (AuthReply(success=False), None)


def test_rest_success_is_read_as_ma1sds() -> None:
    # Display names are cleaned, 3PIDs parsed, the same way for both backends.
    raw = {"auth": {"success": True, "id": {"type": "mxid", "value": "@a:b"}, "profile": {"display_name": " A\u202e "}}}
    reply, store_id = parse_rest_auth(raw)
    assert reply == parse_check_credentials(raw) == AuthReply(success=True, display_name="A", three_pids=None)
    assert store_id == StoreUserId("mxid", "@a:b")


def test_rest_success_without_id_gives_none() -> None:
    reply, store_id = parse_rest_auth({"auth": {"success": True}})
    assert reply.success is True
    assert store_id is None
    assert parse_rest_auth({"auth": {"success": True, "id": None}})[1] is None


@pytest.mark.parametrize(
    "auth,words",
    [
        ({"id": {"type": "localpart", "value": "alice"}}, "'auth.success' is null"),
        ({"success": "true", "id": {"type": "localpart", "value": "alice"}}, "'auth.success' is a string"),
        ({"success": True, "id": "alice"}, "'auth.id' is a string, not an object"),
        ({"success": True, "id": {"type": "localpart"}}, "'auth.id' needs string 'type' and 'value'"),
        ({"success": True, "id": {"type": 1, "value": "alice"}}, "'auth.id' needs string 'type' and 'value'"),
        ({"success": True, "id": {"type": "mxid", "value": None}}, "'auth.id' needs string 'type' and 'value'"),
    ],
)
def test_malformed_rest_auth_replies(auth: Dict[str, Any], words: str) -> None:
    with pytest.raises(MalformedReply) as info:
        parse_rest_auth({"auth": auth})
    assert words in str(info.value)


def test_rest_reply_with_a_duplicate_key_is_refused() -> None:
    body = b'{"auth": {"success": false, "success": true, "id": {"type": "localpart", "value": "alice"}}}'
    with pytest.raises(MalformedReply, match="duplicate key 'success'"):
        parse_rest_auth(decode_json(body))


@pytest.mark.parametrize("kind", ["localpart", "LOCALPART", "Mxid", "email", ""])
def test_store_id_type_is_lowercased_value_kept(kind: str) -> None:
    assert parse_store_id({"type": kind, "value": "Alice"}, "x") == StoreUserId(kind.lower(), "Alice")


def test_rest_lookup_hit_and_miss() -> None:
    hit = {"lookup": {"medium": "email", "address": "a@b.c", "id": {"type": "localpart", "value": "alice"}}}
    assert parse_rest_lookup(hit) == StoreUserId("localpart", "alice")
    assert parse_rest_lookup({"lookup": {"id": {"type": "mxid", "value": "@a:b"}}}) == StoreUserId("mxid", "@a:b")
    assert parse_rest_lookup({}) is None
    assert parse_rest_lookup({"lookup": None}) is None


@pytest.mark.parametrize(
    "value,words",
    [
        ([], "lookup reply is a list"),
        ({"mxid": "@alice:example.org"}, "neither {} nor has a 'lookup' object"),
        ({"lookup": "alice"}, "'lookup' is a string"),
        ({"lookup": {}}, "'lookup' has no 'id'"),
        ({"lookup": {"medium": "email", "address": "a@b.c", "id": None}}, "'lookup' has no 'id'"),
        ({"lookup": {"medium": 1, "id": {"type": "mxid", "value": "@a:b"}}}, "'lookup.medium' is a number"),
        ({"lookup": {"address": [], "id": {"type": "mxid", "value": "@a:b"}}}, "'lookup.address' is a list"),
        ({"lookup": {"id": "@a:b"}}, "'lookup.id' is a string, not an object"),
        ({"lookup": {"id": {"value": "@a:b"}}}, "'lookup.id' needs string"),
    ],
)
def test_malformed_rest_lookup_replies(value: Any, words: str) -> None:
    with pytest.raises(MalformedReply) as info:
        parse_rest_lookup(value)
    assert words in str(info.value)


@SMALL_SETTINGS
@given(JSON)
def test_rest_parsers_only_raise_malformed(value: Any) -> None:
    try:
        reply, store_id = parse_rest_auth(value)
    except MalformedReply:
        pass
    else:
        _check_reply(reply)
        assert reply.success is _granted(value)
        assert store_id is None or reply.success
    try:
        found = parse_rest_lookup(value)
    except MalformedReply:
        return
    assert found is None or isinstance(found, StoreUserId)
