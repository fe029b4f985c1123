"""``--user``: the name as a login takes it (an email address or phone number
looked up as a first login does), reading the password, asking ma1sd about
it, and what a login with accepted credentials would do. The password is
never printed or logged."""

import argparse
import getpass
import sys
import time
from typing import Any, Dict, Optional, Tuple

from rest_auth_provider.backends import Backend
from rest_auth_provider.cli.report import (
    EXIT_BACKEND,
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_REFUSED,
    FAIL,
    OK,
    WARN,
    Report,
    format_ms,
    quoted,
)
from rest_auth_provider.config import ProviderConfig
from rest_auth_provider.response import AuthReply, canonical_threepid
from rest_auth_provider.safetext import printable
from rest_auth_provider.syncplan import NOT_SENT, POLICY_OFF, AccountState, plan_sync, wanted_profile
from rest_auth_provider.transport import BackendError
from rest_auth_provider.users import LocalRefusal, LoginName, parse_login_name, password_problem


def read_password(prompt: str, from_stdin: bool) -> str:
    """Returns the password: without echo from the terminal, or the first line of stdin."""
    stdin = sys.stdin
    if from_stdin or stdin is None or not stdin.isatty():
        if stdin is None:
            return ""
        line = stdin.readline()
        if line.endswith("\n"):
            line = line[:-1]
        if line.endswith("\r"):
            line = line[:-1]
        return line
    return getpass.getpass(prompt)


def login_threepid(text: str) -> Optional[Tuple[str, str]]:
    """Returns the canonical (medium, address) when ``text`` is an email
    address or a phone number (``+`` and the country code), as a client sends
    a login by 3PID; None when it is to be read as a user name or ID."""
    if text.startswith("+"):
        return canonical_threepid("msisdn", text)
    if "@" in text and not text.startswith("@"):
        return canonical_threepid("email", text)
    return None


def resolve_user(args: argparse.Namespace, report: Report) -> Tuple[Optional[Tuple[str, str]], int]:
    """Returns ((user ID, password) or None, exit code so far) for ``--user``;
    reads the password. For an email address or phone number the pair holds
    ``--user`` as typed instead of the user ID: :func:`check_user` looks it up."""
    if args.user is None:
        return None, EXIT_OK
    user = report.start_user(args.user)
    server_name = report.data["server_name"]
    if server_name is None:
        user["error"] = "no server_name in the configuration"
        report.line(FAIL, "login", "cannot build the user ID: no 'server_name' in the configuration")
        return None, EXIT_CONFIG
    threepid = login_threepid(args.user)
    if threepid is not None:
        user["threepid"] = {"medium": threepid[0], "address": threepid[1]}
        shown = "%s %s" % threepid
    else:
        name = _login_name(args.user, server_name, report)
        if name is None:
            return None, EXIT_REFUSED
        shown = name.user_id
    password = read_password("Password for %s: " % printable(shown), args.password_stdin)
    problem = password_problem(password)
    if problem is not None:
        error = "empty password" if not password else problem
        user.update(checked=True, accepted=False, error=error)
        report.line(FAIL, "login", "%s: %s, refused without asking ma1sd" % (printable(shown), error))
        return None, EXIT_REFUSED
    return (args.user if threepid is not None else shown, password), EXIT_OK


def _login_name(raw: str, server_name: str, report: Report) -> Optional[LoginName]:
    """Returns the login name for ``raw`` (printing a WARN when Synapse would
    not create such an account), or None when a login would refuse it
    without asking ma1sd (printed, and set as ``user.error``)."""
    user = report.data["user"]
    try:
        name = parse_login_name(raw, server_name)
    except LocalRefusal as e:
        user.update(checked=True, accepted=False, error=str(e))
        report.line(
            FAIL, "login", "'%s' would be refused without asking ma1sd: %s" % (printable(raw), printable(str(e)))
        )
        return None
    user.update(user_id=name.user_id, registrable=name.registrable)
    if not name.registrable:
        report.line(
            WARN,
            "login",
            "%s cannot be created as a new account (Synapse refuses such a user ID); "
            "only an existing account with this ID can log in" % printable(name.user_id),
        )
    return name


async def lookup_user(backend: Backend, text: str, report: Report) -> Tuple[Optional[str], int]:
    """Returns (the user ID the backend maps the email or phone number ``text``
    to, exit code so far), asking as a first login by 3PID does; the ID is
    None when a login would be refused (the exit code says why)."""
    threepid = login_threepid(text)
    assert threepid is not None, "resolve_user passes only emails and phone numbers through"
    medium, address = threepid
    user = report.data["user"]
    shown = "%s %s" % (medium, printable(address))
    if not backend.threepid_lookup_enabled:
        user.update(checked=True, accepted=False, error="3PID lookup turned off")
        report.line(
            FAIL,
            "lookup",
            "%s: looking up emails and phone numbers is turned off (threepid_login), so a login by it works only "
            "for an account Synapse already holds it for (this command does not read Synapse's database)" % shown,
        )
        return None, EXIT_REFUSED
    started = time.monotonic()
    try:
        mxid = await backend.lookup_threepid(medium, address, report.data["server_name"])
    except BackendError as e:
        user.update(checked=True, accepted=None, error=str(e))
        report.line(FAIL, "lookup", "%s: %s could not answer: %s" % (shown, backend.name, printable(str(e))))
        return None, EXIT_BACKEND
    elapsed = time.monotonic() - started
    if mxid is None:
        user.update(checked=True, accepted=False, error="no user for this %s" % medium)
        report.line(FAIL, "lookup", "%s: %s knows no user for it (%s)" % (shown, backend.name, format_ms(elapsed)))
        return None, EXIT_REFUSED
    report.line(OK, "lookup", "%s -> %s (%s)" % (shown, printable(mxid), format_ms(elapsed)))
    report.line(
        "",
        "lookup",
        "(an account Synapse already holds this %s for gets the login instead; this command cannot tell)" % medium,
    )
    if not mxid.startswith("@"):
        user.update(checked=True, accepted=False, error="the lookup answered something that is not a user ID")
        report.line(FAIL, "login", "%s: the lookup answered something that is not a user ID" % shown)
        return None, EXIT_REFUSED
    name = _login_name(mxid, report.data["server_name"], report)
    if name is None:
        return None, EXIT_REFUSED
    return name.user_id, EXIT_OK


async def check_user(backend: Backend, user_id: str, password: str, config: ProviderConfig, report: Report) -> int:
    """Asks the backend about the user's password; returns the exit code for the
    outcome. ``user_id`` may be an email address or phone number: it is looked
    up first (see :func:`lookup_user`)."""
    if not user_id.startswith("@"):
        resolved, code = await lookup_user(backend, user_id, report)
        if resolved is None:
            return code
        user_id = resolved
    shown = printable(user_id)
    started = time.monotonic()
    try:
        reply = await backend.verify_password(user_id, password)
    except BackendError as e:
        report.data["user"].update(checked=True, accepted=None, error=str(e))
        report.line(FAIL, "login", "%s: %s could not answer: %s" % (shown, backend.name, printable(str(e))))
        return EXIT_BACKEND
    elapsed = time.monotonic() - started
    report.data["user"].update(checked=True, accepted=reply.success, ms=round(elapsed * 1000, 1))
    if not reply.success:
        report.data["user"]["error"] = "%s refused the credentials" % backend.name
        report.line(FAIL, "login", "%s: %s refused the credentials (%s)" % (shown, backend.name, format_ms(elapsed)))
        return EXIT_REFUSED
    report.line(OK, "login", "%s: %s accepted the credentials (%s)" % (shown, backend.name, format_ms(elapsed)))
    report.data["user"]["login"] = describe_login(reply, config, report)
    return EXIT_OK


def _why_not(skipped: Optional[str], key: str) -> str:
    """Returns why no display name is set: the policy ``key`` is off, or ma1sd sent none."""
    return "%s: false" % key if skipped == POLICY_OFF else "ma1sd sent none"


def _display_name_line(report: Report, when: str, name: Optional[str], setting: str, not_setting: str) -> None:
    """Prints what happens to the display name ``when``: ``setting`` with the
    quoted ``name``, or ``not_setting`` when ``name`` is None."""
    text = setting % quoted(name) if name is not None else not_setting
    report.line("", "profile", "%s: %s" % (when, text))


def describe_login(reply: AuthReply, config: ProviderConfig, report: Report) -> Dict[str, Any]:
    """Prints what a login with these accepted credentials would do (the
    wanted profile of :mod:`rest_auth_provider.syncplan`: this command cannot
    read the account's state); returns the same as data.

    What ma1sd sent is printed escaped (see ``printable``) and returned as it came."""
    wanted = wanted_profile(reply, config.policy)
    name = wanted.display_name
    report.line("", "profile", "display name from ma1sd: %s" % (quoted(name) if name else "(none)"))
    report.line("", "account", "registration happens on first login if the account does not exist")
    report.line("", "", "(this command does not read Synapse's database, so it cannot tell)")

    new_account = plan_sync(wanted, AccountState(exists=False))
    _display_name_line(
        report,
        "on registration",
        new_account.display_name,
        "display name set to %s",
        "no display name set (%s)" % _why_not(wanted.registration_skipped, "policy.registration.profile.name"),
    )
    _display_name_line(
        report,
        "on later logins",
        wanted.login_display_name,
        "display name set to %s if it differs",
        "display name left as it is (%s)" % _why_not(wanted.login_skipped, "policy.login.profile.name"),
    )

    adds = [{"medium": medium, "address": address} for medium, address in wanted.threepids or ()]
    ignored = [{"medium": i.medium, "address": i.address, "reason": i.reason} for i in wanted.ignored]
    result: Dict[str, Any] = {
        "display_name": name,
        "registration_sets_display_name": new_account.display_name,
        "login_sets_display_name": wanted.login_display_name,
        "threepids_add": adds,
        "threepids_ignored": ignored,
        "threepids_replace": wanted.replace,
    }
    if wanted.threepids_skipped == POLICY_OFF:
        report.line("", "3pid", "not synced (policy.all.threepid.update: false)")
        return result
    if wanted.threepids_skipped == NOT_SENT:
        report.line("", "3pid", "ma1sd sent no 3PID list: none added, none removed")
        return result
    for added in adds:
        report.line(
            "",
            "3pid",
            "adds %s %s (unless already there; never taken from another account)"
            % (printable(added["medium"]), printable(added["address"])),
        )
    for item in ignored:
        report.line(
            "", "3pid", "ignores %s %s: %s" % (printable(item["medium"]), quoted(item["address"]), item["reason"])
        )
    if not adds and not ignored:
        report.line("", "3pid", "ma1sd lists no 3PIDs")
    if wanted.replace:
        removed = "local 3PIDs not in this list" if adds else "every local 3PID"
        report.line("", "3pid", "policy.all.threepid.replace: true: %s would be removed" % removed)
    return result
