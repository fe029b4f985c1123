"""The HTTP probe and, with ``--user``, the user check, run in a Twisted reactor
through the module's own client (its headers, TLS policy, size cap and timeout)."""

import json
import time
from typing import Any, List, Optional, Tuple

from twisted.internet import defer, task

from rest_auth_provider.cli.report import EXIT_BACKEND, EXIT_OK, FAIL, OK, Report, format_ms
from rest_auth_provider.cli.user import check_user
from rest_auth_provider.client import BackendError, Ma1sdClient
from rest_auth_provider.config import ProviderConfig
from rest_auth_provider.response import MalformedReply, decode_json, parse_check_credentials
from rest_auth_provider.safetext import printable, redact_url, shown_url

# A user that cannot exist anywhere (".invalid" is reserved, RFC 2606) and a
# password that is no one's secret: the probe asks ma1sd about them.
PROBE_USER_ID = "@rest-auth-provider-check:invalid"
PROBE_PASSWORD = "x"


def classify_probe_reply(status: int, body: bytes) -> Tuple[bool, str, Optional[str]]:
    """Returns (looks like ma1sd, explanation, errcode) for the reply to the probe user.

    The explanation shows what came from the reply escaped (see ``printable``);
    errcode is as the reply had it."""
    if 300 <= status < 400:
        return False, "HTTP %d redirect, never followed: point 'endpoint' at the final URL" % status, None
    try:
        value = decode_json(body)
    except MalformedReply as e:
        return (
            False,
            "HTTP %d, %s: not ma1sd (wrong 'endpoint', or a proxy's error page?)" % (status, printable(str(e))),
            None,
        )
    errcode = value.get("errcode") if isinstance(value, dict) else None
    errcode = errcode if isinstance(errcode, str) else None
    if 200 <= status < 300:
        try:
            reply = parse_check_credentials(value)
        except MalformedReply as e:
            return False, "HTTP %d, JSON but not a check_credentials reply: %s" % (status, printable(str(e))), errcode
        if reply.success:
            return (
                False,
                "HTTP %d, but it ACCEPTED the made-up user %s with password 'x': would it accept any password?"
                % (status, PROBE_USER_ID),
                errcode,
            )
        return True, "HTTP %d, answers like ma1sd (auth.success = false for the made-up probe user)" % status, errcode
    if status == 400 and errcode is not None:
        return (
            True,
            "HTTP 400 %s, ma1sd's answer to an invalid user ID (expected for the probe user)" % printable(errcode),
            errcode,
        )
    hint = {
        401: ": check 'headers' / 'header_files'",
        403: ": check 'headers' / 'header_files'",
        404: ": check 'endpoint' (path prefix?)",
    }.get(status, "")
    shown = " %s" % printable(errcode) if errcode else ""
    return False, "HTTP %d%s, not a check_credentials answer%s" % (status, shown, hint), errcode


async def _post(client: Ma1sdClient, url: str, body: bytes) -> Tuple[int, bytes]:
    """Returns (status, body) of a POST through the client (its headers, TLS
    policy, size cap and timeout), whatever the status.

    Raises BackendError when there is no complete reply.
    """
    status, _, data = await client.request_raw("check_credentials", b"POST", url, body)
    return status, data


async def probe_http(client: Ma1sdClient, reactor: Any, config: ProviderConfig, report: Report) -> bool:
    """Returns True when the check_credentials URL answers the probe user like ma1sd."""
    url = config.check_credentials_url
    shown = shown_url(url)
    body = json.dumps({"user": {"id": PROBE_USER_ID, "password": PROBE_PASSWORD}}).encode("utf-8")
    started = time.monotonic()
    try:
        status, data = await _post(client, url, body)
    except BackendError as e:
        report.data["probe"]["http"] = {"ok": False, "url": redact_url(url), "status": None, "error": str(e)}
        report.line(FAIL, "http", "POST %s: %s" % (shown, printable(str(e))))
        return False
    elapsed = time.monotonic() - started
    ok, explanation, errcode = classify_probe_reply(status, data)
    report.data["probe"]["http"] = {
        "ok": ok,
        "url": redact_url(url),
        "status": status,
        "ms": round(elapsed * 1000, 1),
        "ma1sd_like": ok,
        "errcode": errcode,
        "detail": explanation,
    }
    report.line("", "http", "POST %s for %s" % (shown, PROBE_USER_ID))
    report.line(OK if ok else FAIL, "http", "%s (%s)" % (explanation, format_ms(elapsed)))
    return ok


async def run_async(
    reactor: Any,
    client: Ma1sdClient,
    config: ProviderConfig,
    user: Optional[Tuple[str, str]],
    report: Report,
) -> int:
    """Returns the exit code of the HTTP probe and, if asked, the user check."""
    try:
        if not await probe_http(client, reactor, config, report):
            if user is not None:
                report.line("", "login", "not checked: ma1sd did not answer the probe correctly")
            return EXIT_BACKEND
        if user is None:
            return EXIT_OK
        return await check_user(client, user[0], user[1], config, report)
    finally:
        await client.close()


def run_in_reactor(client: Ma1sdClient, config: ProviderConfig, user: Optional[Tuple[str, str]], report: Report) -> int:
    """Returns run_async's exit code, run in a fresh Twisted reactor (possible once per process).

    Raises what run_async raised, and KeyboardInterrupt when the reactor was stopped by a signal.
    """
    codes: List[int] = []
    errors: List[BaseException] = []
    stopping: List[bool] = []

    async def body(reactor: Any) -> None:
        # Set when a signal stops the reactor: failures after that are not ma1sd's.
        reactor.addSystemEventTrigger("before", "shutdown", stopping.append, True)
        try:
            code = await run_async(reactor, client, config, user, report)
        except Exception as e:  # raised again below, outside the reactor
            errors.append(e)
            return
        if not stopping:
            codes.append(code)

    try:
        task.react(lambda reactor: defer.ensureDeferred(body(reactor)))
    except SystemExit:  # react() always exits; the outcome is in ``codes`` or ``errors``
        pass
    if not codes and (stopping or not errors):  # a signal stopped the reactor before the checks ended
        raise KeyboardInterrupt()
    if errors:
        raise errors[0]
    return codes[0]
