"""A demo homeserver: real Synapse with the provider, and a stand-in ma1sd
(or, with ``--backend rest``, a stand-in REST identity store) serving the
users in demo/users.yaml. Run with ``scripts/demo`` (``scripts/demo --backend
rest``). Ctrl-C, SIGINT, SIGTERM or SIGHUP to its PID stop Synapse and the
stand-in and remove every folder it made; so does its own failure.

Uses the same harness as the integration tests.
"""

import argparse
import os
import re
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import requests
import yaml

from support.fake_ma1sd import FakeMa1sd
from support.fake_reststore import FakeRestStore
from support.harness import (
    SynapseServer,
    module_block,
    remove_templates,
    remove_tree,
    supports_modules_style,
)

ROOT = Path(__file__).resolve().parents[1]
# What stops the demo: Ctrl-C (SIGINT; a terminal or tox may send a second
# one while it stops, which changes nothing), kill (SIGTERM), the terminal
# closing (SIGHUP).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# The last line of a Python traceback: "package.SomeError: message".
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*:")


class DemoFailed(Exception):
    """The demo cannot go on; the message says why."""


class StopRequest:
    """The signal handler: records the signals, never raises, so a signal
    cannot interrupt starting or stopping halfway."""

    def __init__(self) -> None:
        self.signals: List[int] = []

    def __call__(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)

    def __bool__(self) -> bool:
        return bool(self.signals)


def read_users(path: Path) -> List[Dict[str, Any]]:
    """Returns the users of a users.yaml file; raises DemoFailed when it
    cannot be read or a user lacks an ``id`` or ``password``."""
    try:
        users = yaml.safe_load(path.read_text())["users"]
        for entry in users:
            if not isinstance(entry.get("id"), str) or not isinstance(entry.get("password"), str):
                raise ValueError("every user needs an id and a password")
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError, ValueError) as e:
        raise DemoFailed("cannot read the users from %s: %s" % (path, e)) from None
    if not users:
        raise DemoFailed("%s lists no users" % path)
    return list(users)


def localpart(user_id: str) -> str:
    """Returns the localpart of ``@localpart:server``."""
    return user_id[1:].split(":", 1)[0]


def json_object(values: Dict[str, str]) -> str:
    """Returns ``values`` as compact JSON, keys in the given order."""
    return "{%s}" % ",".join('"%s":"%s"' % item for item in values.items())


def check_command(files: List[Path], user: str) -> str:
    """Returns the ``rest-auth-provider check`` command line for this
    environment's installed CLI."""
    cli = Path(sys.executable).parent / "rest-auth-provider"
    cmd = [str(cli)] if cli.exists() else [sys.executable, "-m", "rest_auth_provider.cli"]
    cmd.append("check")
    for path in files:
        cmd += ["-c", str(path)]
    cmd += ["--user", user]
    return " ".join(shlex.quote(part) for part in cmd)


def error_lines(text: str, limit: int = 4) -> List[str]:
    """Returns the last few distinct error lines of Synapse's log and output
    (log lines at ERROR or CRITICAL, exception lines; no traceback frames)."""
    found: List[str] = []
    for line in text.splitlines():
        line = line.rstrip()
        if (" - ERROR - " in line or " - CRITICAL - " in line or EXCEPTION_LINE.match(line)) and line not in found:
            found.append(line)
    if not found:
        found = [line for line in text.splitlines() if line.strip() and not line.startswith((" ", "Traceback"))]
    return found[-limit:]


def indent(text: str, prefix: str) -> str:
    return "".join(prefix + line + "\n" for line in text.splitlines())


class Demo:
    """One demo run; :meth:`close` undoes whatever :meth:`run` got to."""

    def __init__(self, args: argparse.Namespace, stop: StopRequest):
        self.args = args
        self.stop = stop
        self.workdir: Optional[Path] = None
        self.fake: Optional[FakeMa1sd] = None
        self.server: Optional[SynapseServer] = None

    def run(self) -> None:
        """Starts everything, prints how to use it and waits for a stop
        request (or ``--exit-after``). Raises DemoFailed."""
        args = self.args
        users = read_users(args.users)
        self.workdir = Path(tempfile.mkdtemp(prefix="rest-auth-demo-"))
        fake = self.fake = FakeRestStore() if args.backend == "rest" else FakeMa1sd()
        fake.start()
        for entry in users:
            fake.add_user(
                entry["id"],
                entry["password"],
                entry.get("display_name"),
                emails=tuple(entry.get("emails", ())),
                msisdns=tuple(entry.get("phones", ())),
            )
        style = "modules" if supports_modules_style() else "password_providers"
        config: Dict[str, Any] = {"endpoint": fake.url, "policy": {"login": {"profile": {"name": True}}}}
        if args.backend == "rest":
            config["backend"] = "rest"
        settings = module_block(style, config)
        # The safe setting docs/security.md asks for: the backend is the only
        # source of passwords (no local Synapse password as a back door).
        settings["password_config"] = {"localdb_enabled": False}
        server = self.server = SynapseServer(self.workdir, settings, name="demo", port=args.port)
        print("Starting Synapse (this takes a few seconds)...", flush=True)
        try:
            server.start(wait=False)
            if self.stop or not server.wait_until_ready(timeout=180, abort=lambda: bool(self.stop)):
                return
        except RuntimeError as e:
            if server.exit_code is None:  # --generate-config failed, or no answer in time
                headline, _, details = str(e).partition("\n")
                raise DemoFailed(
                    "Synapse did not start: %s\n%s" % (headline, indent("\n".join(error_lines(details)), "  ").rstrip())
                ) from None
            raise DemoFailed(self.synapse_exited("while starting")) from None
        print(self.banner(users, style, settings), flush=True)
        started = time.monotonic()
        while not self.stop and server.running:
            if args.exit_after and time.monotonic() - started > args.exit_after:
                return
            time.sleep(0.2)
        if not self.stop:
            raise DemoFailed(self.synapse_exited("by itself"))

    def synapse_exited(self, when: str) -> str:
        """Returns what to say when Synapse exited ``when``."""
        assert self.server is not None
        return "Synapse exited %s (exit code %s); its last errors:\n%s" % (
            when,
            self.server.exit_code,
            indent("\n".join(error_lines(self.server.log_text())), "  ").rstrip("\n"),
        )

    def banner(self, users: List[Dict[str, Any]], style: str, settings: Dict[str, Any]) -> str:
        """Returns what the demo prints once Synapse answers."""
        assert self.server is not None and self.fake is not None
        server, args = self.server, self.args
        url = server.url
        # Synapse serves the v3 client API from 1.48; older releases only r0.
        api = "v3" if requests.get(url + "/_matrix/client/v3/login", timeout=10).status_code == 200 else "r0"
        client = "%s/_matrix/client/%s" % (url, api)
        first = users[0]
        # The email example is a first login: a user the homeserver has never
        # seen (and the name example never logs in).
        newcomer = next((u for u in users[1:] if u.get("emails")), None)
        stand_in = "Stand-in REST store" if args.backend == "rest" else "Stand-in ma1sd"
        lines = [
            "",
            "Demo homeserver: %s  (server name %s; Synapse's PID %s)" % (url, server.server_name, server.pid),
            "%s: %s  (in the demo process, PID %d), serving %d users from %s"
            % (stand_in, self.fake.url, os.getpid(), len(users), args.users),
            "",
            "Config files Synapse reads (in this order; later files win):",
            "  %s   (generated by synapse --generate-config)" % server.files[0],
        ]
        lines += ["  %s" % path for path in server.files[1:]]
        lines += [
            "The demo's settings in %s include the module block (from '%s:') and" % (server.files[-1].name, style),
            "password_config, so %s is the only source of passwords (docs/security.md):"
            % ("the REST store" if args.backend == "rest" else "ma1sd"),
            "",
            indent(yaml.safe_dump(settings, default_flow_style=False, sort_keys=False), "    ").rstrip("\n"),
            "",
            "Check the setup as on a real server (it asks for %s's password, %s):"
            % (localpart(first["id"]), first["password"]),
            "  " + check_command(server.files, localpart(first["id"])),
            "",
            "Log in by user name:",
            "  curl -s -XPOST %s/login -d '%s'"
            % (
                client,
                '{"type":"m.login.password","identifier":%s,"password":"%s"}'
                % (json_object({"type": "m.id.user", "user": localpart(first["id"])}), first["password"]),
            ),
            "",
        ]
        email_user = newcomer or first
        email = (email_user.get("emails") or ["%s@example.org" % localpart(email_user["id"])])[0]
        if newcomer is not None:
            lines.append(
                "First login by email: the homeserver has never seen %s; the module asks the stand-in who %s is"
                % (newcomer.get("display_name") or newcomer["id"], email)
            )
            lines.append("and creates %s with that name:" % newcomer["id"])
        else:
            lines.append("Log in by email:")
        lines += [
            "  curl -s -XPOST %s/login -d '%s'"
            % (
                client,
                '{"type":"m.login.password","identifier":%s,"password":"%s"}'
                % (
                    json_object({"type": "m.id.thirdparty", "medium": "email", "address": email}),
                    email_user["password"],
                ),
            ),
            "",
            "Then look at what the module provisioned:",
            "  curl -s %s/profile/%s" % (client, first["id"]),
        ]
        if newcomer is not None:
            lines.append("  curl -s %s/profile/%s" % (client, newcomer["id"]))
        lines += [
            '  curl -s -H "Authorization: Bearer <access_token>" %s/account/3pid' % client,
            "",
            "Synapse's log: %s" % server.log_path,
            "Press Ctrl-C to stop (or kill %d); the demo then stops Synapse and removes the folders above."
            % os.getpid(),
        ]
        return "\n".join(lines)

    def close(self) -> None:
        """Stops Synapse and the stand-in and removes the demo's folders
        (the Synapse template included); safe after any partial start."""
        if self.server is None and self.fake is None and self.workdir is None:
            return
        print("\nStopping...", flush=True)
        removed = []
        if self.server is not None:
            self.server.stop()
            removed += [path.parent for path in self.server.files]
        if self.fake is not None:
            self.fake.stop()
        if self.workdir is not None:
            remove_tree(self.workdir)
        remove_templates()
        if removed:
            print("Stopped; removed %s." % " and ".join(str(p) for p in dict.fromkeys(removed)), flush=True)


def main(argv: Any = None) -> int:
    """Returns 0 after a requested stop, 1 when the demo failed."""
    stop = StopRequest()
    for signum in STOP_SIGNALS:
        # Also when started with SIGINT ignored (a shell starts background
        # jobs that way): Ctrl-C or kill -INT must stop the demo.
        signal.signal(signum, stop)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=Path, default=ROOT / "demo" / "users.yaml")
    parser.add_argument(
        "--backend",
        choices=("ma1sd", "rest"),
        default="ma1sd",
        help="what the module asks: a stand-in ma1sd (default) or a stand-in REST identity store",
    )
    parser.add_argument("--port", type=int, default=None, help="Synapse's port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--exit-after", type=float, default=0, help="stop after this many seconds (for tests)")
    args = parser.parse_args(argv)
    demo = Demo(args, stop)
    code = 0
    try:
        demo.run()
    except Exception as e:  # stop cleanly, say why
        if not stop:
            what = str(e) if isinstance(e, DemoFailed) else "%s: %s" % (type(e).__name__, e)
            print("\nThe demo failed: %s" % what, file=sys.stderr, flush=True)
            code = 1
        # else: a stop was asked for; a child the same Ctrl-C reached before it
        # left the demo's process group (e.g. `synapse --generate-config`) may
        # have failed because of it: that is the requested stop, not a failure.
    finally:
        demo.close()
        # Done: a signal now (a terminal's or tox's second Ctrl-C) must not
        # kill the interpreter while it exits (Python restores the default
        # action of the signals it handled; an ignored signal stays ignored).
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
    return code


if __name__ == "__main__":
    sys.exit(main())
