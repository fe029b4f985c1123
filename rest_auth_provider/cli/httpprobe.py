"""The HTTP probe and, with ``--user``, the user check, run in a Twisted reactor
through the module's own transport (its headers, TLS policy, size cap and timeout)."""

import time
import uuid
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet import defer, task

from rest_auth_provider.backends import make_backend
from rest_auth_provider.cli.report import EXIT_BACKEND, EXIT_OK, FAIL, OK, Report, format_ms
from rest_auth_provider.cli.user import check_user
from rest_auth_provider.config import ProviderConfig
from rest_auth_provider.response import MalformedReply, decode_json, parse_check_credentials, parse_rest_auth
from rest_auth_provider.safetext import printable, redact_url, shown_url
from rest_auth_provider.transport import BackendError, HttpReply, Transport

# A user that cannot exist anywhere (".invalid" is reserved, RFC 2606) and a
# password that is no one's secret: the probe asks ma1sd about them.
PROBE_USER_ID = "@rest-auth-provider-check:invalid"
PROBE_PASSWORD = "x"
# The REST store is asked about a made-up user of Synapse's own domain (a
# store answers 400 for another domain, which is what the probe detects),
# with a fresh random password that is no one's secret.
REST_PROBE_LOCALPART = "rest-auth-provider-check"


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


async def probe_http(transport: Transport, config: ProviderConfig, report: Report) -> bool:
    """Returns True when the check_credentials URL answers the probe user like ma1sd."""
    url = config.check_credentials_url
    body = {"user": {"id": PROBE_USER_ID, "password": PROBE_PASSWORD}}
    sent = await _post_probe(transport, report, "check_credentials", url, body)
    if sent is None:
        return False
    reply, elapsed = sent
    ok, explanation, errcode = classify_probe_reply(reply.status, reply.body)
    _report_probe(report, url, PROBE_USER_ID, reply, elapsed, ok, explanation, ma1sd_like=ok, errcode=errcode)
    return ok


async def _post_probe(
    transport: Transport, report: Report, endpoint: str, url: str, body: Dict[str, Any]
) -> Optional[Tuple[HttpReply, float]]:
    """Returns the probe's reply and how long it took in seconds; None (after
    reporting why) when no reply came."""
    started = time.monotonic()
    try:
        reply = await transport.request(endpoint, "POST", url, json_body=body)
    except BackendError as e:
        report.data["probe"]["http"] = {"ok": False, "url": redact_url(url), "status": None, "error": str(e)}
        report.line(FAIL, "http", "POST %s: %s" % (shown_url(url), printable(str(e))))
        return None
    return reply, time.monotonic() - started


def _report_probe(
    report: Report,
    url: str,
    user_id: str,
    reply: HttpReply,
    elapsed: float,
    ok: bool,
    explanation: str,
    **fields: Any,
) -> None:
    """Records the probe's result (``fields``: the backend's own JSON fields) and prints it."""
    report.data["probe"]["http"] = {
        "ok": ok,
        "url": redact_url(url),
        "status": reply.status,
        "ms": round(elapsed * 1000, 1),
        **fields,
        "detail": explanation,
    }
    report.line("", "http", "POST %s for %s" % (shown_url(url), printable(user_id)))
    report.line(OK if ok else FAIL, "http", "%s (%s)" % (explanation, format_ms(elapsed)))


def classify_rest_probe_reply(status: int, body: bytes, domain: str) -> Tuple[bool, str]:
    """Returns (looks like a REST identity store that serves ``domain``,
    explanation) for the store's reply to the made-up probe user.

    What came from the reply is shown escaped (see ``printable``)."""
    if 300 <= status < 400:
        return False, "HTTP %d redirect, never followed: point 'endpoint' or 'rest.auth' at the final URL" % status
    if status == 400:
        return False, (
            "HTTP 400: the store refused the request itself: is its domain %s (Synapse's server_name)?"
            % printable(domain)
        )
    hint = {
        401: ": check 'headers' / 'header_files' (a proxy in front of the store?)",
        403: ": check 'headers' / 'header_files'",
        404: ": check 'endpoint' and 'rest.auth' (path prefix?)",
    }.get(status, "")
    try:
        reply, _ = parse_rest_auth(decode_json(body))
    except MalformedReply as e:
        return False, "HTTP %d, %s: not an auth/login answer%s" % (status, printable(str(e)), hint)
    if not (200 <= status < 300 or status in (401, 404)):
        return False, "HTTP %d, not an auth/login answer%s" % (status, hint)
    if reply.success:
        return False, (
            "HTTP %d, but it ACCEPTED the made-up user with a made-up password: would it accept any password?" % status
        )
    return True, (
        "HTTP %d, answers like a REST identity store (auth.success = false for the made-up probe user "
        "of %s: the domain is accepted)" % (status, printable(domain))
    )


async def probe_rest_store(transport: Transport, config: ProviderConfig, report: Report) -> bool:
    """Returns True when the store's auth/login URL answers the probe user
    like a REST identity store serving Synapse's domain."""
    url = config.rest_auth_url
    domain = report.data.get("server_name")
    if not isinstance(domain, str) or not domain:
        report.data["probe"]["http"] = {"ok": False, "url": redact_url(url), "status": None, "error": "no server_name"}
        report.line(FAIL, "http", "cannot probe the REST store: no 'server_name' in the configuration")
        return False
    user_id = "@%s:%s" % (REST_PROBE_LOCALPART, domain)
    body = {
        "auth": {"mxid": user_id, "localpart": REST_PROBE_LOCALPART, "domain": domain, "password": uuid.uuid4().hex}
    }
    sent = await _post_probe(transport, report, "auth_login", url, body)
    if sent is None:
        return False
    reply, elapsed = sent
    ok, explanation = classify_rest_probe_reply(reply.status, reply.body, domain)
    _report_probe(report, url, user_id, reply, elapsed, ok, explanation, store_like=ok)
    return ok


async def run_async(
    reactor: Any,
    transport: Transport,
    config: ProviderConfig,
    user: Optional[Tuple[str, str]],
    report: Report,
) -> int:
    """Returns the exit code of the HTTP probe and, if asked, the user check."""
    backend = make_backend(config, transport)
    try:
        probe = probe_rest_store if backend.kind == "rest" else probe_http
        if not await probe(transport, config, report):
            if user is not None:
                report.line("", "login", "not checked: %s did not answer the probe correctly" % backend.name)
            return EXIT_BACKEND
        if user is None:
            return EXIT_OK
        return await check_user(backend, user[0], user[1], config, report)
    finally:
        await backend.close()


def run_in_reactor(
    transport: Transport, config: ProviderConfig, user: Optional[Tuple[str, str]], report: Report
) -> int:
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
            code = await run_async(reactor, transport, config, user, report)
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
