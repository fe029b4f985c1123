"""``--user``: reading the password, asking ma1sd about it, and what a login
with accepted credentials would do. The password is never printed or logged."""

import argparse
import getpass
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

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
from rest_auth_provider.response import AuthReply, canonical_threepid, untrusted_threepid_reason
from rest_auth_provider.safetext import printable
from rest_auth_provider.transport import BackendError
from rest_auth_provider.users import LocalRefusal, parse_login_name, password_problem


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


def resolve_user(args: argparse.Namespace, report: Report) -> Tuple[Optional[Tuple[str, str]], int]:
    """Returns ((user ID, password) or None, exit code so far) for ``--user``; reads the password."""
    if args.user is None:
        return None, EXIT_OK
    report.data["user"] = {"name": args.user, "user_id": None, "checked": False, "accepted": None}
    server_name = report.data["server_name"]
    if server_name is None:
        report.line(FAIL, "login", "cannot build the user ID: no 'server_name' in the configuration")
        return None, EXIT_CONFIG
    try:
        name = parse_login_name(args.user, server_name)
    except LocalRefusal as e:
        report.data["user"].update(checked=True, accepted=False, error=str(e))
        report.line(
            FAIL, "login", "'%s' would be refused without asking ma1sd: %s" % (printable(args.user), printable(str(e)))
        )
        return None, EXIT_REFUSED
    report.data["user"]["user_id"] = name.user_id
    report.data["user"]["registrable"] = name.registrable
    shown = printable(name.user_id)
    if not name.registrable:
        report.line(
            WARN,
            "login",
            "%s cannot be created as a new account (Synapse refuses such a user ID); "
            "only an existing account with this ID can log in" % shown,
        )
    password = read_password("Password for %s: " % shown, args.password_stdin)
    problem = password_problem(password)
    if problem is not None:
        error = "empty password" if not password else problem
        report.data["user"].update(checked=True, accepted=False, error=error)
        report.line(FAIL, "login", "%s: %s, refused without asking ma1sd" % (shown, error))
        return None, EXIT_REFUSED
    return (name.user_id, password), EXIT_OK


async def check_user(backend: Backend, user_id: str, password: str, config: ProviderConfig, report: Report) -> int:
    """Asks the backend about the user's password; returns the exit code for the outcome."""
    shown = printable(user_id)
    started = time.monotonic()
    try:
        reply = await backend.check_password(user_id, password)
    except BackendError as e:
        report.data["user"].update(checked=True, accepted=None, error=str(e))
        report.line(FAIL, "login", "%s: %s could not answer: %s" % (shown, backend.name, printable(str(e))))
        return EXIT_BACKEND
    elapsed = time.monotonic() - started
    report.data["user"].update(checked=True, accepted=reply.success, ms=round(elapsed * 1000, 1))
    if not reply.success:
        report.line(FAIL, "login", "%s: %s refused the credentials (%s)" % (shown, backend.name, format_ms(elapsed)))
        return EXIT_REFUSED
    report.line(OK, "login", "%s: %s accepted the credentials (%s)" % (shown, backend.name, format_ms(elapsed)))
    report.data["user"]["login"] = describe_login(reply, config, report)
    return EXIT_OK


def describe_login(reply: AuthReply, config: ProviderConfig, report: Report) -> Dict[str, Any]:
    """Prints what a login with these accepted credentials would do; returns the same as data.

    What ma1sd sent is printed escaped (see ``printable``) and returned as it came."""
    policy = config.policy
    name = reply.display_name
    result: Dict[str, Any] = {"display_name": name}
    report.line("", "profile", "display name from ma1sd: %s" % (quoted(name) if name else "(none)"))
    report.line("", "account", "registration happens on first login if the account does not exist")
    report.line("", "", "(this command does not read Synapse's database, so it cannot tell)")

    if not policy.registration_profile_name:
        on_registration = None
        text = "no display name set (policy.registration.profile.name: false)"
    elif name is None:
        on_registration = None
        text = "no display name set (ma1sd sent none)"
    else:
        on_registration = name
        text = "display name set to %s" % quoted(name)
    result["registration_sets_display_name"] = on_registration
    report.line("", "profile", "on registration: %s" % text)

    if not policy.login_profile_name:
        on_login = None
        text = "display name left as it is (policy.login.profile.name: false)"
    elif name is None:
        on_login = None
        text = "display name left as it is (ma1sd sent none)"
    else:
        on_login = name
        text = "display name set to %s if it differs" % quoted(name)
    result["login_sets_display_name"] = on_login
    report.line("", "profile", "on later logins: %s" % text)

    adds: List[Dict[str, str]] = []
    ignored: List[Dict[str, str]] = []
    result["threepids_add"] = adds
    result["threepids_ignored"] = ignored
    result["threepids_replace"] = False
    if not policy.threepid_update:
        report.line("", "3pid", "not synced (policy.all.threepid.update: false)")
        return result
    if reply.three_pids is None:
        report.line("", "3pid", "ma1sd sent no 3PID list: none added, none removed")
        return result
    for pid in reply.three_pids:
        canonical = canonical_threepid(pid.medium, pid.address)
        untrusted = untrusted_threepid_reason(pid.medium, pid.address) if canonical is not None else None
        if untrusted is not None:
            ignored.append({"medium": pid.medium, "address": pid.address, "reason": untrusted})
        elif canonical is not None:
            if {"medium": canonical[0], "address": canonical[1]} not in adds:
                adds.append({"medium": canonical[0], "address": canonical[1]})
        elif pid.medium in ("email", "msisdn"):
            ignored.append({"medium": pid.medium, "address": pid.address, "reason": "unusable address"})
        else:
            ignored.append({"medium": pid.medium, "address": pid.address, "reason": "only email and msisdn are kept"})
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
    if policy.threepid_replace:
        result["threepids_replace"] = True
        removed = "local 3PIDs not in this list" if adds else "every local 3PID"
        report.line("", "3pid", "policy.all.threepid.replace: true: %s would be removed" % removed)
    return result
