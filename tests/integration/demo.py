"""A demo homeserver: real Synapse with the provider, and a stand-in ma1sd
(or, with ``--backend rest``, a stand-in REST identity store) serving the
users in demo/users.yaml. Run with ``tox -e demo`` (or ``scripts/demo``,
``scripts/demo --backend rest``); Ctrl-C stops everything.

Uses the same harness as the integration tests.
"""

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

import requests
import yaml

from tests.fake_ma1sd import FakeMa1sd
from tests.fake_reststore import FakeRestStore
from tests.integration.harness import SynapseServer, module_block, remove_tree, supports_modules_style


def load_users(fake: FakeMa1sd, path: Path) -> list:
    data = yaml.safe_load(path.read_text())
    users = data["users"]
    for entry in users:
        fake.add_user(
            entry["id"],
            entry["password"],
            entry.get("display_name"),
            emails=tuple(entry.get("emails", ())),
            msisdns=tuple(entry.get("phones", ())),
        )
    return list(users)


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=Path, default=Path(__file__).resolve().parents[2] / "demo" / "users.yaml")
    parser.add_argument(
        "--backend",
        choices=("ma1sd", "rest"),
        default="ma1sd",
        help="what the module asks: a stand-in ma1sd (default) or a stand-in REST identity store",
    )
    parser.add_argument("--exit-after", type=float, default=0, help="stop after this many seconds (for tests)")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="rest-auth-demo-"))
    fake = FakeRestStore().start() if args.backend == "rest" else FakeMa1sd().start()
    users = load_users(fake, args.users)
    style = "modules" if supports_modules_style() else "password_providers"
    config: Dict[str, Any] = {"endpoint": fake.url, "policy": {"login": {"profile": {"name": True}}}}
    if args.backend == "rest":
        config["backend"] = "rest"
    stand_in = "Stand-in REST store:" if args.backend == "rest" else "Stand-in ma1sd:"
    server = SynapseServer(workdir, module_block(style, config), name="demo")
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    # Ctrl-C must stop the demo even when it was started with SIGINT ignored
    # (a shell starts background jobs that way, and Python then keeps it so).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        print("Starting Synapse (this takes a few seconds)...", flush=True)
        server.start()
        first = users[0]
        localpart = first["id"][1:].split(":")[0]
        email = (first.get("emails") or ["alice@example.org"])[0]
        url = server.url
        # Synapse serves the v3 client API from 1.48; older releases only r0.
        api = "v3" if requests.get(url + "/_matrix/client/v3/login", timeout=10).status_code == 200 else "r0"
        client = "%s/_matrix/client/%s" % (url, api)
        print(
            "\nDemo homeserver: %s  (server name %s, module loaded from '%s:')\n"
            "%s  %s  serving %d users from %s\n\n"
            "Log in by user name:\n"
            '  curl -s -XPOST %s/login -d \'{"type":"m.login.password",'
            '"identifier":{"type":"m.id.user","user":"%s"},"password":"%s"}\'\n\n'
            "Log in by email (first login included):\n"
            '  curl -s -XPOST %s/login -d \'{"type":"m.login.password",'
            '"identifier":{"type":"m.id.thirdparty","medium":"email","address":"%s"},"password":"%s"}\'\n\n'
            "Then look at what the module provisioned:\n"
            "  curl -s %s/profile/%s\n"
            '  curl -s -H "Authorization: Bearer <access_token>" %s/account/3pid\n\n'
            "Synapse's log: %s\nPress Ctrl-C to stop."
            % (
                url,
                server.server_name,
                style,
                stand_in,
                fake.url,
                len(users),
                args.users,
                client,
                localpart,
                first["password"],
                client,
                email,
                first["password"],
                client,
                first["id"],
                client,
                server.log_path,
            ),
            flush=True,
        )
        started = time.monotonic()
        while not stopping and server.running:
            if args.exit_after and time.monotonic() - started > args.exit_after:
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        print("\nStopping...", flush=True)
        server.stop()
        fake.stop()
        remove_tree(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
