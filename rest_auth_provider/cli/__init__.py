"""``rest-auth-provider check``: checks a homeserver's configuration of the
module and the path to ma1sd, without Synapse running and without writing
anything anywhere.

1. Reads the ``-c`` files the way Synapse does (a directory means its ``*.yaml``
   files in sorted order; a later file's top-level keys replace earlier ones),
   finds the module's block under ``modules:`` or ``password_providers:``,
   validates its ``config:`` with the module's own parser and shows the
   effective settings, defaults included. Warns when Synapse's local password
   database is still on (the "back door").
2. Probes the endpoint: DNS, TCP connect, TLS (certificate subject and expiry),
   then a ``check_credentials`` call for a made-up user that cannot exist.
3. With ``--user``: the name as a login takes it (user name, user ID, email
   address or phone number, the last two looked up as a first login does);
   asks ma1sd about that user's password (read without echo, or from stdin)
   and shows what a login would do: accepted or not, display name, 3PIDs.
   The password is never printed or logged.

``rest-auth-provider --version`` prints the module's and Synapse's versions.

Exit codes:

====  ==========================================================================
0     all good (warnings do not change it)
1     unexpected error (a bug: please report it with the traceback)
2     configuration error: a file missing or not YAML, the module's block
      missing, listed twice or invalid, a certificate or header file unreadable
3     ma1sd unreachable or not answering like ma1sd: DNS, TCP, TLS or HTTP
      failure, timeout, a reply that is not ma1sd's
4     credentials refused (only with ``--user``)
64    usage error (unknown option, missing ``-c``), as ``EX_USAGE`` of sysexits.h
130   interrupted (Ctrl-C)
====  ==========================================================================

``--json`` prints one JSON object instead of the text (see docs/check.md).
"""

import argparse
import logging
import sys
from typing import Any, NoReturn, Optional, Sequence

from rest_auth_provider import __version__
from rest_auth_provider.cli.configfiles import ConfigFailure, load_and_validate
from rest_auth_provider.cli.httpprobe import run_in_reactor
from rest_auth_provider.cli.probe import ProbeFailed, probe_socket_level
from rest_auth_provider.cli.report import (
    EXIT_BACKEND,
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    FAIL,
    Report,
    versions_text,
)
from rest_auth_provider.cli.user import resolve_user
from rest_auth_provider.safetext import printable


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, but usage errors exit with 64 so they never collide with the check's own codes."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, "%s: error: %s\n" % (self.prog, printable(message, 1000)))


class _VersionAction(argparse.Action):
    """``--version``: prints the versions and exits 0 (Synapse is imported only then)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        kwargs.setdefault("help", "print the module's and the installed Synapse's versions, and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(versions_text(), flush=True)
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    """Returns the command line parser."""
    parser = _ArgumentParser(
        prog="rest-auth-provider",
        description="Tools for the rest_auth_provider Synapse module (%s)." % __version__,
    )
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    check = commands.add_parser(
        "check",
        help="check the configuration and the connection to ma1sd (writes nothing)",
        description="Checks the module's configuration in Synapse's config files and the connection to ma1sd; "
        "with --user, also one user's credentials. Writes nothing anywhere. Exit codes: 0 all good, "
        "2 configuration error, 3 ma1sd unreachable or not answering like ma1sd, 4 credentials refused, "
        "64 usage error.",
    )
    check.add_argument(
        "-c",
        "--config-path",
        dest="config_paths",
        action="append",
        required=True,
        metavar="PATH",
        help="a Synapse config file, or a directory of *.yaml files; repeat as for Synapse (later files win)",
    )
    check.add_argument(
        "--user",
        metavar="NAME",
        help="also check this user's password: a user name, @user:server, an email address or a phone number "
        "(+ and the country code), as a login takes them",
    )
    check.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin (the default when stdin is not a terminal)",
    )
    check.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    check.add_argument(
        "-v", "--verbose", action="store_true", help="log each call to ma1sd to stderr (never bodies or passwords)"
    )
    return parser


def check(args: argparse.Namespace) -> int:
    """Runs ``check``; returns its exit code."""
    report = Report(args.json)
    report.line("", "check", versions_text())
    try:
        _, config, transport = load_and_validate(args.config_paths, report)
    except ConfigFailure as e:
        report.line(FAIL, "config", str(e))
        report.finish(EXIT_CONFIG)
        return EXIT_CONFIG

    user, code = resolve_user(args, report)
    if code != EXIT_OK:
        report.finish(code)
        return code

    try:
        probe_socket_level(config, report)
    except ProbeFailed as e:
        report.line(FAIL, e.step, str(e))
        for detail in e.details:
            report.line("", e.step, detail)
        report.line("", "http", "not tried")
        if user is not None:
            report.line("", "login", "not checked: ma1sd is not reachable")
        report.finish(EXIT_BACKEND)
        return EXIT_BACKEND

    code = run_in_reactor(transport, config, user, report)
    report.finish(code)
    return code


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(
            level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        logging.getLogger("rest_auth_provider").setLevel(logging.DEBUG)
    try:
        if args.command == "check":
            return check(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    raise AssertionError("unknown command %r" % args.command)
