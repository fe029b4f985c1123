"""The ma1sd adapter (``backend: ma1sd``) against the real threaded fake ma1sd
on a loopback port: what ma1sd receives and how its replies are read.

Nothing is mocked: every call goes through the treq transport and real
sockets to ``support.fake_ma1sd``. How the transport behaves on its own
(deadline, caps, TLS, retries) is in ``test_transport.py``.
"""

import json
from pathlib import Path
from typing import Any

import pytest

from rest_auth_provider.backends import Backend, make_backend
from rest_auth_provider.backends.ma1sd import Ma1sdBackend
from rest_auth_provider.config import CHECK_CREDENTIALS_PATH, DEFAULT_LOOKUP_PATH, parse_config
from rest_auth_provider.response import AuthReply, ThreePid
from rest_auth_provider.transport import BackendError, Transport
from support.fake_ma1sd import FakeMa1sd, Fault
from support.twisted_helpers import ensure_deferred
from tests.unit.conftest import NewBackend, Serve

ALICE = "@alice:example.com"
ALICE_PASSWORD = "correct horse battery staple"
BOB = "@bob:example.com"
BOB_PASSWORD = "hunter2"
SERVER_NAME = "example.com"


def _add_users(fake: FakeMa1sd) -> None:
    fake.add_user(
        ALICE,
        ALICE_PASSWORD,
        display_name="Alice Liddell",
        emails=("Alice@Example.com",),
        msisdns=("+44 20 7946 0000",),
    )
    fake.add_user(BOB, BOB_PASSWORD)


@pytest.fixture
def fake(serve: Serve) -> FakeMa1sd:
    server = serve(FakeMa1sd())
    _add_users(server)
    return server


async def _check_fails(backend: Backend, user_id: str = ALICE, password: str = ALICE_PASSWORD) -> str:
    """Returns the message of the BackendError that verify_password must raise."""
    with pytest.raises(BackendError) as info:
        await backend.verify_password(user_id, password)
    return str(info.value)


async def _lookup_fails(backend: Backend) -> str:
    """Returns the message of the BackendError that lookup_threepid must raise."""
    with pytest.raises(BackendError) as info:
        await backend.lookup_threepid("email", "alice@example.com", SERVER_NAME)
    return str(info.value)


# -- what the adapter is ----------------------------------------------------------


def test_make_backend_gives_the_ma1sd_adapter_by_default() -> None:
    config = parse_config({"endpoint": "http://127.0.0.1:1"})
    backend = make_backend(config, Transport(config))
    assert isinstance(backend, Ma1sdBackend)
    assert (backend.name, backend.kind) == ("ma1sd", "ma1sd")


@pytest.mark.parametrize("enabled", [True, False])
def test_threepid_lookup_follows_threepid_login_enabled(enabled: bool) -> None:
    config = parse_config({"endpoint": "http://127.0.0.1:1", "threepid_login": {"enabled": enabled}})
    assert Ma1sdBackend(config, Transport(config)).threepid_lookup_enabled is enabled


# -- replies ---------------------------------------------------------------------


@ensure_deferred
async def test_success_reply_is_parsed(fake: FakeMa1sd, new_backend: NewBackend) -> None:
    backend = new_backend(endpoint=fake.url)
    reply = await backend.verify_password(ALICE, ALICE_PASSWORD)
    assert reply == AuthReply(
        success=True,
        display_name="Alice Liddell",
        three_pids=(
            ThreePid(medium="email", address="Alice@Example.com"),
            ThreePid(medium="msisdn", address="+44 20 7946 0000"),
        ),
    )


@ensure_deferred
async def test_success_without_profile_data(fake: FakeMa1sd, new_backend: NewBackend) -> None:
    backend = new_backend(endpoint=fake.url)
    reply = await backend.verify_password(BOB, BOB_PASSWORD)
    # ma1sd sent an explicit empty list, which is not the same as no list.
    assert reply == AuthReply(success=True, display_name=None, three_pids=())


@ensure_deferred
async def test_success_without_three_pids_list_gives_none(fake: FakeMa1sd, new_backend: NewBackend) -> None:
    fake.fault = Fault("body", body=b'{"auth": {"success": true, "display_name": " Carol "}}')
    backend = new_backend(endpoint=fake.url)
    reply = await backend.verify_password("@carol:example.com", "whatever")
    assert reply == AuthReply(success=True, display_name="Carol", three_pids=None)


@ensure_deferred
async def test_wrong_password_is_success_false(fake: FakeMa1sd, new_backend: NewBackend) -> None:
    backend = new_backend(endpoint=fake.url)
    reply = await backend.verify_password(ALICE, "wrong password")
    assert reply == AuthReply(success=False)
    assert reply.display_name is None
    assert reply.three_pids is None


@ensure_deferred
async def test_unknown_user_is_success_false(fake: FakeMa1sd, new_backend: NewBackend) -> None:
    backend = new_backend(endpoint=fake.url)
    reply = await backend.verify_password("@nobody:example.com", ALICE_PASSWORD)
    assert reply.success is False


@pytest.mark.parametrize(
    "body,key",
    [
        (b'{"auth": {"success": false, "success": true}}', "success"),
        (b'{"auth": {"success": false}, "auth": {"success": true}}', "auth"),
        (
            b'{"auth": {"success": true, "profile": {"three_pids": '
            b'[{"medium": "email", "medium": "msisdn", "address": "447700900999"}]}}}',
            "medium",
        ),
    ],
)
@ensure_deferred
async def test_reply_with_duplicate_key_is_backend_error(
    fake: FakeMa1sd, new_backend: NewBackend, body: bytes, key: str
) -> None:
    fake.fault = Fault("body", body=body)
    backend = new_backend(endpoint=fake.url)
    assert await _check_fails(backend) == "reply has a duplicate key '%s'" % key


@ensure_deferred
async def test_malformed_reply_is_backend_error(fake: FakeMa1sd, new_backend: NewBackend) -> None:
    fake.fault = Fault("body", body=b'{"auth": {"success": "true"}}')
    backend = new_backend(endpoint=fake.url)
    assert "auth.success" in await _check_fails(backend)


@pytest.mark.parametrize("status", [500, 404, 401, 204])
@ensure_deferred
async def test_error_status_is_backend_error(fake: FakeMa1sd, new_backend: NewBackend, status: int) -> None:
    fake.fault = Fault("status", status=status, body=b'{"auth": {"success": true}}' if status != 204 else b"")
    backend = new_backend(endpoint=fake.url)
    message = await _check_fails(backend)
    if status == 204:
        # A 2xx without a body is not a verdict.
        assert "not JSON" in message
    else:
        # Even with a body that says success: only a 2xx is a verdict.
        assert message == "HTTP %d" % status


@ensure_deferred
async def test_non_json_reply(fake: FakeMa1sd, new_backend: NewBackend) -> None:
    fake.fault = Fault("body", body=b"<html><body>Bad gateway</body></html>")
    backend = new_backend(endpoint=fake.url)
    assert "not JSON" in await _check_fails(backend)


@ensure_deferred
async def test_redirect_is_a_backend_error_naming_the_target(fake: FakeMa1sd, new_backend: NewBackend) -> None:
    fake.fault = Fault("redirect", status=307, location="http://127.0.0.1:9/elsewhere")
    backend = new_backend(endpoint=fake.url)
    message = await _check_fails(backend)
    assert message == "HTTP 307 redirect to http://127.0.0.1:9/elsewhere not followed (check 'endpoint')"
    assert len(fake.requests) == 1


# -- the request ma1sd receives -------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/", "//"], ids=["plain", "trailing-slash", "two-slashes"])
@ensure_deferred
async def test_request_body_path_and_headers(fake: FakeMa1sd, new_backend: NewBackend, suffix: str) -> None:
    backend = new_backend(endpoint=fake.url + suffix)
    await backend.verify_password(ALICE, ALICE_PASSWORD)
    assert len(fake.requests) == 1
    request = fake.requests[0]
    assert request["method"] == "POST"
    assert request["path"] == CHECK_CREDENTIALS_PATH
    assert request["query"] == {}
    assert json.loads(request["body"]) == {"user": {"id": ALICE, "password": ALICE_PASSWORD}}
    assert request["headers"]["content-type"] == "application/json"
    assert request["headers"]["content-length"] == str(len(request["body"]))
    assert request["headers"]["accept"] == "application/json"
    assert request["headers"]["user-agent"].startswith("rest_auth_provider/")
    assert "accept-encoding" not in request["headers"]
    assert "cookie" not in request["headers"]


@ensure_deferred
async def test_endpoint_with_path_prefix(fake: FakeMa1sd, new_backend: NewBackend) -> None:
    backend = new_backend(endpoint=fake.url + "/ma1sd/")
    # The fake serves only the root paths, so the prefixed one is a 404.
    assert await _check_fails(backend) == "HTTP 404"
    assert [r["path"] for r in fake.requests] == ["/ma1sd" + CHECK_CREDENTIALS_PATH]


@ensure_deferred
async def test_password_with_unicode_and_quotes_arrives_intact(fake: FakeMa1sd, new_backend: NewBackend) -> None:
    password = 'p\u00e4ss "w\u00f6rd" \\ \u2603'
    fake.add_user("@dora:example.com", password)
    backend = new_backend(endpoint=fake.url)
    reply = await backend.verify_password("@dora:example.com", password)
    assert reply.success is True
    assert fake.requests[0]["password"] == password


@ensure_deferred
async def test_configured_headers_are_sent_with_both_calls(
    fake: FakeMa1sd, new_backend: NewBackend, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token")
    backend = new_backend(
        endpoint=fake.url, headers={"Authorization": "Bearer x"}, header_files={"X-Token": str(token_file)}
    )
    assert (await backend.verify_password(ALICE, ALICE_PASSWORD)).success is True
    assert await backend.lookup_threepid("email", "alice@example.com", SERVER_NAME) == ALICE
    for request in fake.requests:
        assert request["headers"]["authorization"] == "Bearer x"
        assert request["headers"]["x-token"] == "s3cret-token"


# -- 3PID lookup -----------------------------------------------------------------


@pytest.mark.parametrize(
    "medium, address, expected",
    [
        ("email", "alice@example.com", ALICE),
        ("msisdn", "442079460000", ALICE),
        ("email", "nobody@example.com", None),
    ],
)
@ensure_deferred
async def test_lookup_threepid(
    fake: FakeMa1sd, new_backend: NewBackend, medium: str, address: str, expected: Any
) -> None:
    backend = new_backend(endpoint=fake.url)
    assert await backend.lookup_threepid(medium, address, SERVER_NAME) == expected
    request = fake.requests[0]
    assert request["method"] == "GET"
    assert request["path"] == DEFAULT_LOOKUP_PATH
    assert request["query"] == {"medium": [medium], "address": [address]}
    assert request["body"] == b""
    assert "content-type" not in request["headers"]


@pytest.mark.parametrize("address", ["e+ve&x=1@example.com", "j\u00fcrgen m\u00fcller/?#%@example.com"])
@ensure_deferred
async def test_lookup_address_is_url_encoded(fake: FakeMa1sd, new_backend: NewBackend, address: str) -> None:
    fake.add_user("@eve:example.com", "x", emails=(address,))
    backend = new_backend(endpoint=fake.url)
    assert await backend.lookup_threepid("email", address, SERVER_NAME) == "@eve:example.com"
    assert fake.requests[0]["query"] == {"medium": ["email"], "address": [address]}


@ensure_deferred
async def test_lookup_custom_path(fake: FakeMa1sd, new_backend: NewBackend) -> None:
    backend = new_backend(endpoint=fake.url, threepid_login={"lookup_path": "/custom/lookup"})
    assert await _lookup_fails(backend) == "HTTP 404"
    assert fake.requests[0]["path"] == "/custom/lookup"


@ensure_deferred
async def test_lookup_malformed_reply(fake: FakeMa1sd, new_backend: NewBackend) -> None:
    fake.fault = Fault("body", body=b'{"mxid": 42}')
    backend = new_backend(endpoint=fake.url)
    assert "mxid" in await _lookup_fails(backend)


@ensure_deferred
async def test_close_closes_the_kept_alive_connection(fake: FakeMa1sd, new_backend: NewBackend) -> None:
    backend = new_backend(endpoint=fake.url)
    assert (await backend.verify_password(ALICE, ALICE_PASSWORD)).success is True
    await backend.close()
    assert (await backend.verify_password(ALICE, ALICE_PASSWORD)).success is True
    assert fake.connections == 2
