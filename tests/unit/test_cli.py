"""``rest-auth-provider check`` against the real threaded fake ma1sd.

Twisted's reactor runs once per process, so every check runs in a process of
its own. Importing Synapse takes seconds, so a runner process imports the
command once and forks a fresh child for each check (the reactor never ran in
the runner, so each child starts it for the first time); one test also runs
the real ``python -m rest_auth_provider.cli``. The fake ma1sd runs in a thread
of the test process and the children reach it on its loopback port.
"""

import json
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import yaml

from support.certs import CertPaths, write_certs
from support.fake_ma1sd import CHECK_PATH, FakeMa1sd, Fault
from support.fake_reststore import FakeRestStore
from tests.unit.conftest import Serve

ROOT = Path(__file__).resolve().parents[2]
MODULE = "rest_auth_provider.RestAuthProvider"
SERVER_NAME = "example.org"
ALICE = "@alice:example.org"
ALICE_PASSWORD = "Tr0ub4dor&3 correct-horse"
REQUEST_TIMEOUT = 60.0
# rest_auth_provider.cli's probe; not imported from there, so that this
# process need not import Synapse (seconds) just for two constants.
PROBE_USER_ID = "@rest-auth-provider-check:invalid"
PROBE_PASSWORD = "x"


def _installed_synapse() -> Tuple[int, ...]:
    """Returns the installed Synapse's version as numbers, read without importing Synapse."""
    try:
        from importlib.metadata import version
    except ImportError:  # pragma: no cover - Python 3.8 has it
        return ()
    return tuple(int(n) for n in re.findall(r"\d+", version("matrix-synapse"))[:3])


SYNAPSE_VERSION = _installed_synapse()

# Reads one JSON request per line: {"argv": [...], "stdin": text or null};
# runs main(argv) in a forked child with stdin, stdout and stderr on files;
# answers one JSON line: {"code": ..., "stdout": ..., "stderr": ...}.
RUNNER = textwrap.dedent(
    """
    import json, os, sys, tempfile, traceback
    from rest_auth_provider import cli

    work = tempfile.mkdtemp(prefix="rap-cli-")
    paths = [os.path.join(work, name) for name in ("stdin", "stdout", "stderr")]
    print(json.dumps({"ready": True}), flush=True)
    for request in sys.stdin:
        request = json.loads(request)
        with open(paths[0], "w") as f:
            f.write(request["stdin"] or "")
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                write = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                for target, (path, flags) in enumerate(zip(paths, (os.O_RDONLY, write, write))):
                    fd = os.open(path, flags, 0o600)
                    os.dup2(fd, target)
                    os.close(fd)
                sys.stdin = open(0, "r", closefd=False)
                try:
                    code = cli.main(request["argv"])
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                except BaseException:
                    traceback.print_exc()
                    code = 1
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
        answer = {"code": code}
        for name, path in zip(("stdout", "stderr"), paths[1:]):
            with open(path) as f:
                answer[name] = f.read()
        print(json.dumps(answer), flush=True)
    """
)


@dataclass
class Result:
    """What one run of the command printed and returned."""

    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """Returns stdout and stderr together."""
        return self.stdout + self.stderr

    def json(self) -> Dict[str, Any]:
        """Returns the parsed ``--json`` output."""
        value = json.loads(self.stdout)
        assert isinstance(value, dict)
        return value

    def lines(self, marker: str) -> List[str]:
        """Returns the human output lines that start with ``marker`` (OK, WARN, FAIL)."""
        return [line for line in self.stdout.splitlines() if line.startswith(marker + " ")]


class Runner:
    """Talks to the runner process."""

    def __init__(self, stderr_path: Path) -> None:
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        self._stderr_path = stderr_path
        self._stderr = stderr_path.open("w")
        self._process = subprocess.Popen(
            [sys.executable, "-c", RUNNER],
            cwd=str(ROOT),
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            start_new_session=True,
        )
        self._ready = False

    def wait_ready(self) -> None:
        """Waits until the runner has imported the command (seconds: it imports Synapse)."""
        if not self._ready:
            assert self._read() == {"ready": True}
            self._ready = True

    def _read(self) -> Dict[str, Any]:
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], REQUEST_TIMEOUT)
        if not ready:
            self.close()
            raise AssertionError("the check did not finish within %g s" % REQUEST_TIMEOUT)
        line = self._process.stdout.readline()
        if not line:
            raise AssertionError("the runner process died:\n" + self._stderr_path.read_text()[-3000:])
        value = json.loads(line)
        assert isinstance(value, dict)
        return value

    def run(self, argv: List[str], stdin: Optional[str]) -> Result:
        """Returns the result of ``main(argv)`` in a fresh child process."""
        self.wait_ready()
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"argv": argv, "stdin": stdin}) + "\n")
        self._process.stdin.flush()
        answer = self._read()
        return Result(answer["code"], answer["stdout"], answer["stderr"])

    def close(self) -> None:
        """Stops the runner (and a child it may still wait for)."""
        if self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()
        self._stderr.close()


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    """The runner; it starts importing at once but is waited for only when first used."""
    process = Runner(tmp_path_factory.mktemp("runner") / "stderr")
    yield process
    process.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    return write_certs(str(tmp_path_factory.mktemp("certs")))


@pytest.fixture(scope="module")
def shared_fake(serve_module: Serve) -> FakeMa1sd:
    # One server for the module: stopping one takes half a second.
    server = serve_module(FakeMa1sd())
    server.add_user(
        ALICE,
        ALICE_PASSWORD,
        display_name="Alice Liddell",
        emails=("Alice@Example.ORG",),
        msisdns=("+44 20 7946 0000",),
        extra_three_pids=({"medium": "ldap_uid", "address": "aliddell"},),
    )
    return server


@pytest.fixture
def fake(shared_fake: FakeMa1sd) -> FakeMa1sd:
    """The fake ma1sd with alice, without faults and with an empty request log."""
    shared_fake.reset()
    return shared_fake


def write_yaml(path: Path, data: Dict[str, Any]) -> str:
    """Writes ``data`` as YAML to ``path``; returns the path as a string."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def homeserver(
    tmp_path: Path,
    config: Any,
    section: str = "modules",
    name: str = "homeserver.yaml",
    **top: Any,
) -> str:
    """Writes a homeserver.yaml with the module's block holding ``config``; returns its path."""
    data: Dict[str, Any] = {"server_name": SERVER_NAME, "report_stats": False}
    data[section] = [{"module": MODULE, "config": config}]
    data.update(top)
    return write_yaml(tmp_path / name, data)


def check(
    runner: Runner,
    *configs: str,
    args: Optional[List[str]] = None,
    stdin: Optional[str] = None,
    secret: Optional[str] = None,
) -> Result:
    """Returns the result of ``check -c <each config> <args>``; asserts ``secret`` was never printed."""
    argv = ["check"]
    for path in configs:
        argv += ["-c", path]
    result = runner.run(argv + list(args or []), stdin)
    if secret is not None:
        assert secret not in result.output
    return result


# -- exit 0 ---------------------------------------------------------------------------


def test_real_command_line_with_json(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    # The real entry point, in a process of its own. First in the file and given the runner, so that
    # the runner imports Synapse while this process does too.
    config = homeserver(tmp_path, {"endpoint": fake.url}, password_config={"localdb_enabled": False})
    completed = subprocess.run(
        [sys.executable, "-m", "rest_auth_provider.cli", "check", "-c", config, "--user", "alice", "--json"],
        cwd=str(ROOT),
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
        input=ALICE_PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=REQUEST_TIMEOUT,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert ALICE_PASSWORD not in completed.stdout + completed.stderr
    report = json.loads(completed.stdout)
    assert report["exit_code"] == 0
    assert report["config_files"] == [config]
    assert report["module"] == {"section": "modules", "index": 0}
    assert report["server_name"] == SERVER_NAME
    assert report["settings"]["endpoint"] == fake.url
    assert report["settings"]["policy"]["registration"]["profile"]["name"] is True
    assert report["probe"]["dns"]["ok"] is True
    assert report["probe"]["tcp"]["ok"] is True
    assert report["probe"]["tls"] is None
    assert report["probe"]["http"]["status"] == 200
    assert report["probe"]["http"]["ma1sd_like"] is True
    user = report["user"]
    assert user["user_id"] == ALICE
    assert user["accepted"] is True
    assert user["login"]["display_name"] == "Alice Liddell"
    assert user["login"]["registration_sets_display_name"] == "Alice Liddell"
    assert user["login"]["login_sets_display_name"] is None
    assert user["login"]["threepids_add"] == [
        {"medium": "email", "address": "alice@example.org"},
        {"medium": "msisdn", "address": "442079460000"},
    ]
    assert [i["medium"] for i in user["login"]["threepids_ignored"]] == ["ldap_uid"]
    assert user["login"]["threepids_replace"] is False
    assert [w for w in report["warnings"] if not w.startswith("module: the installed Synapse")] == []
    assert report["errors"] == []


def test_good_config_and_right_password(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    config = homeserver(tmp_path, {"endpoint": fake.url, "policy": {"all": {"threepid": {"replace": True}}}})
    result = check(runner, config, args=["--user", "Alice"], stdin=ALICE_PASSWORD + "\n", secret=ALICE_PASSWORD)
    assert result.code == 0, result.output
    out = result.stdout
    assert "OK    module     modules.<item 0>.config is valid" in out
    # The effective settings, defaults included.
    assert 'setting    endpoint = "%s"' % fake.url in out
    assert "setting    timeout = 10.0" in out
    assert "setting    policy.login.profile.name = false" in out
    assert "setting    policy.all.threepid.replace = true" in out
    assert any(line.startswith("OK    dns ") and "127.0.0.1" in line for line in result.lines("OK"))
    assert any(line.startswith("OK    tcp ") for line in result.lines("OK"))
    assert "tls        not used (http:// endpoint)" in out
    assert any("answers like ma1sd" in line for line in result.lines("OK"))
    assert "OK    login      @alice:example.org: ma1sd accepted the credentials" in out
    assert 'display name from ma1sd: "Alice Liddell"' in out
    assert "registration happens on first login if the account does not exist" in out
    assert 'on registration: display name set to "Alice Liddell"' in out
    assert "on later logins: display name left as it is (policy.login.profile.name: false)" in out
    assert "adds email alice@example.org" in out
    assert "adds msisdn 442079460000" in out
    assert 'ignores ldap_uid "aliddell": only email and msisdn are kept' in out
    assert "local 3PIDs not in this list would be removed" in out
    assert result.stdout.rstrip().endswith("exit 0")
    assert result.stderr == ""
    # The probe asked about a made-up user, then the real check about alice, lowercased.
    checked = [(r["user_id"], r["password"]) for r in fake.requests_for(CHECK_PATH)]
    assert checked == [(PROBE_USER_ID, PROBE_PASSWORD), (ALICE, ALICE_PASSWORD)]


def test_probe_only_without_user(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    result = check(runner, homeserver(tmp_path, {"endpoint": fake.url}))
    assert result.code == 0, result.output
    assert not any(" login " in line for line in result.stdout.splitlines())
    assert [r["user_id"] for r in fake.requests_for(CHECK_PATH)] == [PROBE_USER_ID]


def test_ma1sd_400_with_errcode_counts_as_ma1sd(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    fake.fault = Fault("status", status=400, body=b'{"errcode": "M_INVALID_PARAM", "error": "Invalid user ID"}')
    result = check(runner, homeserver(tmp_path, {"endpoint": fake.url}), args=["--json"])
    assert result.code == 0, result.output
    http = result.json()["probe"]["http"]
    assert http["status"] == 400
    assert http["ma1sd_like"] is True
    assert http["errcode"] == "M_INVALID_PARAM"


# -- exit 2: configuration ------------------------------------------------------------


def test_unknown_key_is_named(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    config = homeserver(tmp_path, {"endpoint": fake.url, "policy": {"login": {"profile": {"nmae": True}}}})
    result = check(runner, config)
    assert result.code == 2, result.output
    [failure] = result.lines("FAIL")[:1]
    assert "modules.<item 0>.config.policy.login.profile.nmae" in failure
    assert "unknown key" in failure
    assert result.stdout.rstrip().endswith("exit 2")
    # Nothing was asked of ma1sd.
    assert fake.requests == []


def test_wrong_type_is_named_in_json(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    config = homeserver(tmp_path, {"endpoint": fake.url, "timeout": "soon"}, section="password_providers")
    report = check(runner, config, args=["--json"]).json()
    assert report["exit_code"] == 2
    assert len(report["errors"]) == 1
    assert "password_providers.<item 0>.config.timeout: expected a number" in report["errors"][0]
    assert report["settings"] is None


def test_missing_file(runner: Runner, tmp_path: Path) -> None:
    result = check(runner, str(tmp_path / "nowhere.yaml"))
    assert result.code == 2
    assert "nowhere.yaml: cannot read it (No such file or directory)" in result.stdout


def test_invalid_yaml_does_not_echo_the_line(runner: Runner, tmp_path: Path) -> None:
    path = tmp_path / "homeserver.yaml"
    path.write_text('server_name: example.org\nmacaroon_secret_key: "s3cr3t-value" broken: [\n')
    result = check(runner, str(path), secret="s3cr3t-value")
    assert result.code == 2
    assert "not valid YAML at line 2" in result.stdout


def test_no_module_block(runner: Runner, tmp_path: Path) -> None:
    config = write_yaml(
        tmp_path / "homeserver.yaml",
        {"server_name": SERVER_NAME, "modules": [{"module": "other.Module", "config": {}}]},
    )
    result = check(runner, config)
    assert result.code == 2
    assert "no block with 'module: rest_auth_provider.RestAuthProvider'" in result.stdout


def test_block_in_both_sections(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    block = [{"module": MODULE, "config": {"endpoint": fake.url}}]
    config = homeserver(tmp_path, {"endpoint": fake.url}, password_providers=block)
    result = check(runner, config)
    assert result.code == 2
    assert "in both 'modules:' and 'password_providers:'" in result.stdout


def test_unreadable_ca_file(runner: Runner, tmp_path: Path) -> None:
    config = homeserver(tmp_path, {"endpoint": "https://127.0.0.1:1", "tls": {"ca_file": str(tmp_path / "no.pem")}})
    result = check(runner, config)
    assert result.code == 2
    assert "cannot load the TLS or header files" in result.stdout
    assert "no.pem" in result.stdout


def test_user_without_server_name(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "hs.yaml", {"modules": [{"module": MODULE, "config": {"endpoint": fake.url}}]})
    result = check(runner, config, args=["--user", "alice"], stdin=ALICE_PASSWORD, secret=ALICE_PASSWORD)
    assert result.code == 2
    assert "no 'server_name'" in result.stdout


# -- exit 3: backend -------------------------------------------------------------------


def test_ma1sd_stopped(runner: Runner, tmp_path: Path) -> None:
    stopped = FakeMa1sd().start()
    url = stopped.url
    stopped.stop()
    config = homeserver(tmp_path, {"endpoint": url, "timeout": 2})
    result = check(runner, config, args=["--user", "alice"], stdin=ALICE_PASSWORD, secret=ALICE_PASSWORD)
    assert result.code == 3, result.output
    [failure] = result.lines("FAIL")[:1]
    assert failure.startswith("FAIL  tcp ")
    assert "connection refused" in failure
    assert "not checked: ma1sd is not reachable" in result.stdout


def test_not_ma1sd_answer(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    fake.fault = Fault("body", body=b"<html><body>Welcome to nginx!</body></html>")
    config = homeserver(tmp_path, {"endpoint": fake.url})
    result = check(runner, config, args=["--user", "alice"], stdin=ALICE_PASSWORD, secret=ALICE_PASSWORD)
    assert result.code == 3, result.output
    [failure] = result.lines("FAIL")[:1]
    assert failure.startswith("FAIL  http ")
    assert "not JSON" in failure
    # The real user's password never went to a server that is not ma1sd.
    assert [json.loads(r["body"])["user"]["id"] for r in fake.requests_for(CHECK_PATH)] == [PROBE_USER_ID]


def test_wrong_path_is_404(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    result = check(runner, homeserver(tmp_path, {"endpoint": fake.url + "/ma1sd"}))
    assert result.code == 3
    assert "HTTP 404 M_NOT_FOUND, not a check_credentials answer: check 'endpoint'" in result.stdout


def test_probe_user_accepted_is_a_failure(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    fake.fault = Fault("body", body=b'{"auth": {"success": true}}')
    result = check(runner, homeserver(tmp_path, {"endpoint": fake.url}))
    assert result.code == 3
    assert "ACCEPTED the made-up user" in result.stdout


def test_timeout(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    fake.fault = Fault("hang")
    result = check(runner, homeserver(tmp_path, {"endpoint": fake.url, "timeout": 0.5}), args=["--json"])
    report = result.json()
    assert report["exit_code"] == 3
    assert report["probe"]["http"]["error"] == "no complete answer within 0.5 s"


def test_tls_untrusted_self_signed(runner: Runner, certs: CertPaths, tmp_path: Path) -> None:
    with FakeMa1sd(tls=certs.self_signed) as server:
        result = check(runner, homeserver(tmp_path, {"endpoint": server.url, "timeout": 2}))
        assert server.requests == []
    assert result.code == 3, result.output
    [failure] = result.lines("FAIL")[:1]
    assert failure.startswith("FAIL  tls ")
    assert "certificate not trusted by the system's CAs" in failure
    assert "self-signed" in failure or "self signed" in failure
    # The presented certificate is shown, to help fix it.
    assert "CN=rest_auth_provider self-signed server" in result.stdout


def test_tls_trusted_with_ca_file(runner: Runner, certs: CertPaths, tmp_path: Path) -> None:
    with FakeMa1sd(tls=certs.server) as server:
        tls = {"ca_file": certs.ca_cert, "client_certificate": certs.client_cert, "client_key": certs.client_key}
        config = homeserver(tmp_path, {"endpoint": server.url, "tls": tls})
        result = check(runner, config, args=["--json"])
    report = result.json()
    assert report["exit_code"] == 0, result.output
    shown = report["probe"]["tls"]
    assert shown["ok"] is True
    assert shown["verified_with"] == "tls.ca_file %s" % certs.ca_cert
    assert "CN=127.0.0.1" in shown["certificate"]["subject"]
    assert shown["certificate"]["days_left"] in (1, 2)
    assert "127.0.0.1" in shown["certificate"]["names"]
    # The test certificates live two days: that deserves a warning, not a failure.
    assert [w for w in report["warnings"] if w.startswith("tls: expires ")] != []
    assert report["probe"]["http"]["ma1sd_like"] is True


# -- exit 4: credentials -----------------------------------------------------------------


def test_wrong_password(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    wrong = "not-the-password-123"
    config = homeserver(tmp_path, {"endpoint": fake.url})
    result = check(runner, config, args=["--user", "@alice:example.org"], stdin=wrong + "\n", secret=wrong)
    assert result.code == 4, result.output
    assert "FAIL  login      @alice:example.org: ma1sd refused the credentials" in result.stdout
    assert fake.requests_for(CHECK_PATH)[-1]["password"] == wrong


def test_wrong_password_json(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    wrong = "not-the-password-456"
    config = homeserver(tmp_path, {"endpoint": fake.url})
    result = check(runner, config, args=["--user", "alice", "--json", "--password-stdin"], stdin=wrong, secret=wrong)
    assert result.code == 4
    report = result.json()
    assert report["exit_code"] == 4
    assert report["user"]["accepted"] is False
    assert report["user"]["user_id"] == ALICE


def test_user_on_another_server_is_refused_without_asking(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    config = homeserver(tmp_path, {"endpoint": fake.url})
    result = check(runner, config, args=["--user", "@alice:elsewhere.org"], stdin=ALICE_PASSWORD, secret=ALICE_PASSWORD)
    assert result.code == 4
    assert "user ID on another server" in result.stdout
    assert fake.requests == []


# -- config files, styles and warnings ----------------------------------------------------


def test_later_file_replaces_modules(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    first = homeserver(tmp_path, {"endpoint": "http://127.0.0.1:9", "policy": {"login": {"profile": {"nmae": 1}}}})
    second = write_yaml(
        tmp_path / "conf.d" / "rest.yaml",
        {"modules": [{"module": MODULE, "config": {"endpoint": fake.url, "timeout": 3}}]},
    )
    report = check(runner, first, second, args=["--json"]).json()
    assert report["exit_code"] == 0, report["errors"]
    assert report["config_files"] == [first, second]
    assert report["settings"]["endpoint"] == fake.url
    assert report["settings"]["timeout"] == 3.0
    # server_name came from the first file.
    assert report["server_name"] == SERVER_NAME


def test_directory_is_read_in_sorted_order(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    conf_d = tmp_path / "conf.d"
    write_yaml(conf_d / "20-late.yaml", {"modules": [{"module": MODULE, "config": {"endpoint": fake.url}}]})
    write_yaml(conf_d / "10-early.yaml", {"modules": [{"module": MODULE, "config": {"endpoint": "http://x:1"}}]})
    (conf_d / "notes.txt").write_text("not read\n")
    main = write_yaml(tmp_path / "homeserver.yaml", {"server_name": SERVER_NAME})
    report = check(runner, main, str(conf_d), args=["--json"]).json()
    assert report["exit_code"] == 0, report["errors"]
    assert report["config_files"] == [main, str(conf_d / "10-early.yaml"), str(conf_d / "20-late.yaml")]
    assert report["settings"]["endpoint"] == fake.url


def test_back_door_warning_by_default(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    result = check(runner, homeserver(tmp_path, {"endpoint": fake.url}))
    assert result.code == 0
    [warning] = [line for line in result.lines("WARN") if " back door " in line]
    assert warning.startswith("WARN  back door  password_config.localdb_enabled is not false")
    assert "password_config: {localdb_enabled: false}" in warning
    assert "warning" in result.stdout.splitlines()[-1]


def test_no_back_door_warning_with_localdb_disabled(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    config = homeserver(tmp_path, {"endpoint": fake.url}, password_config={"localdb_enabled": False})
    result = check(runner, config)
    assert result.code == 0
    assert [line for line in result.lines("WARN") if " back door " in line] == []
    assert "OK    back door  password_config.localdb_enabled: false" in result.stdout


def test_modules_style_warns_on_synapse_before_1_46(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    result = check(runner, homeserver(tmp_path, {"endpoint": fake.url}, password_config={"localdb_enabled": False}))
    assert result.code == 0
    warnings = result.lines("WARN")
    if SYNAPSE_VERSION < (1, 46):
        assert len(warnings) == 1
        assert "cannot load it from 'modules:'; use 'password_providers:'" in warnings[0]
    else:
        assert warnings == []


def test_legacy_password_providers_style(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    config = homeserver(tmp_path, {"endpoint": fake.url}, section="password_providers")
    result = check(runner, config, args=["--user", "alice"], stdin=ALICE_PASSWORD, secret=ALICE_PASSWORD)
    assert result.code == 0, result.output
    assert "found under 'password_providers:' (the legacy style" in result.stdout
    assert "password_providers.<item 0>.config is valid" in result.stdout


# -- secrets and hostile text ---------------------------------------------------------------

# Passwords that fool a URL parser; each has two distinctive halves, neither of which may be printed.
NASTY_PASSWORDS = ["Pa55#w0rd!", "Pa55/w0rd", "Pa55?w0rd", "Pa55@w0rd", "Pa55%23w0rd"]


def assert_terminal_safe(text: str) -> None:
    """Asserts that ``text`` is lines of printable characters: no escape
    sequence, carriage return, NUL, bidi override or lone surrogate."""
    for line in text.split("\n"):
        assert line.isprintable(), repr(line)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("password", NASTY_PASSWORDS)
def test_credentials_in_endpoint_are_never_printed(
    runner: Runner, tmp_path: Path, password: str, as_json: bool
) -> None:
    # The second endpoint is also wrong in every other way that once printed the URL whole.
    for n, endpoint in enumerate(["http://svc:%s@ma1sd.internal:8090", "ftp://svc:%s@h:port/?x=1#f\n"]):
        config = homeserver(tmp_path, {"endpoint": endpoint % password}, name="hs%d.yaml" % n)
        result = check(runner, config, args=["--json"] if as_json else [], secret=password)
        assert result.code == 2, result.output
        for half in ("Pa55", "w0rd"):
            assert half not in result.output
        errors = result.json()["errors"] if as_json else result.lines("FAIL")[:1]
        assert len(errors) == 1
        assert "config.endpoint: credentials in the URL" in errors[0]


def test_redirect_target_with_credentials_is_not_printed(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    fake.fault = Fault("redirect", status=302, location="http://svc:Pa55#w0rd@elsewhere.example/\x1b[2J")
    config = homeserver(tmp_path, {"endpoint": fake.url})
    for args in ([], ["--json"]):
        result = check(runner, config, args=args + ["--user", "alice"], stdin=ALICE_PASSWORD, secret=ALICE_PASSWORD)
        assert result.code == 3, result.output
        assert "Pa55" not in result.output
        assert "w0rd" not in result.output
        assert_terminal_safe(result.output)


@pytest.fixture
def mallory(fake: FakeMa1sd) -> Iterator[str]:
    """A directory user whose profile is out to forge the command's output; yields the password."""
    password = "mallory-pw-42"
    user = fake.add_user("@mallory:example.org", password, display_name="Mal\x1b]0;owned\x07\u202elory\nOK forged")
    user.three_pids = [
        {"medium": "email\nOK forged exit 0", "address": "x@example.org"},
        {"medium": "email", "address": "m\x1b[2J\x07al\x08\x00@example.org"},
        {"medium": "msisdn\r\x1b[1AOK forged", "address": "\x1b[31m44 7700 900123"},
        {"medium": "ldap\x9b2J", "address": "m\ud800l"},
    ]
    yield password
    del fake.users["@mallory:example.org"]


def test_hostile_profile_cannot_forge_output_lines(
    runner: Runner, fake: FakeMa1sd, mallory: str, tmp_path: Path
) -> None:
    # A 3PID medium holding a newline once printed a line "OK forged exit 0" of its own.
    config = homeserver(tmp_path, {"endpoint": fake.url, "policy": {"login": {"profile": {"name": True}}}})
    result = check(runner, config, args=["--user", "mallory"], stdin=mallory + "\n", secret=mallory)
    assert result.code == 0, result.output
    assert_terminal_safe(result.output)
    lines = result.stdout.splitlines()
    assert [line for line in lines if "forged" in line and not line.startswith("      ")] == []
    assert [line for line in lines if re.search(r"exit \d+$", line)] == [lines[-1]]
    assert lines[-1].startswith("OK    result ")
    # What ma1sd sent is still there to read, escaped (the module lowercases a medium).
    out = result.stdout
    # (The display name may also have been cleaned before it gets here.)
    assert 'display name from ma1sd: "Mal' in out
    assert "m\\x1b[2j\\x07al\\x08\\x00@example.org" in out.lower()
    assert "ignores email\\x0aok forged exit 0 " in out.lower()
    assert "msisdn\\x0d\\x1b[1aok forged" in out.lower()
    assert 'ignores ldap\\x9b2j "m\\ud800l": only email and msisdn are kept' in out.lower()


def test_hostile_profile_in_json_is_escaped_and_kept(
    runner: Runner, fake: FakeMa1sd, mallory: str, tmp_path: Path
) -> None:
    config = homeserver(tmp_path, {"endpoint": fake.url})
    result = check(runner, config, args=["--user", "mallory", "--json"], stdin=mallory + "\n", secret=mallory)
    assert result.code == 0, result.output
    assert_terminal_safe(result.output)
    assert result.stdout.isascii()
    login = result.json()["user"]["login"]
    # The data is what ma1sd sent, exactly; only its JSON text is escaped.
    ignored = [(i["medium"].lower(), i["address"]) for i in login["threepids_ignored"]]
    assert ("email\nok forged exit 0", "x@example.org") in ignored
    assert ("ldap\x9b2j", "m\ud800l") in ignored


@pytest.mark.parametrize("name", ["alice\nOK forged exit 0", "\x1b[2Jalice", "@al\u202eice:example.org", "al:ice\r"])
def test_user_name_from_the_command_line_is_escaped(runner: Runner, fake: FakeMa1sd, tmp_path: Path, name: str) -> None:
    result = check(runner, homeserver(tmp_path, {"endpoint": fake.url}), args=["--user", name], stdin="pw\n")
    assert result.code == 4, result.output
    assert_terminal_safe(result.output)
    [failure] = result.lines("FAIL")[:1]
    assert "would be refused without asking ma1sd" in failure
    assert [
        line for line in result.stdout.splitlines() if "forged" in line and not line.startswith("FAIL  login")
    ] == []


def test_config_file_name_and_keys_are_escaped(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    config = homeserver(
        tmp_path, {"endpoint": fake.url, "timeout\x1b[2J\nOK forged": 1}, name="hs\x1b]0;x\x07\nOK.yaml"
    )
    for args in ([], ["--json"]):
        result = check(runner, config, args=args)
        assert result.code == 2, result.output
        assert_terminal_safe(result.output)
        assert [line for line in result.stdout.splitlines() if line.startswith("OK.yaml")] == []
        assert [line for line in result.stdout.splitlines() if line.startswith("OK forged")] == []
    assert "config.timeout\\x1b[2J\\x0aOK forged: unknown key" in result.json()["errors"][0]


# -- usage -------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["check"], ["check", "-c", "x.yaml", "--frobnicate"], []], ids=str)
def test_usage_errors_exit_64(runner: Runner, argv: List[str]) -> None:
    result = runner.run(argv, None)
    assert result.code == 64
    assert "usage: rest-auth-provider" in result.stderr


def test_help_exits_0(runner: Runner) -> None:
    result = runner.run(["check", "--help"], None)
    assert result.code == 0
    assert "--password-stdin" in result.stdout


def test_lookalike_address_is_shown_as_ignored_as_a_login_would(
    runner: Runner, fake: FakeMa1sd, tmp_path: Path
) -> None:
    saved = fake.users[ALICE].three_pids
    fake.users[ALICE].three_pids = [
        {"medium": "email", "address": "\u017fam@example.org"},
        {"medium": "email", "address": "Alice@Example.org"},
    ]
    try:
        config = homeserver(tmp_path, {"endpoint": fake.url})
        result = check(runner, config, args=["--user", "alice"], stdin=ALICE_PASSWORD + "\n", secret=ALICE_PASSWORD)
    finally:
        fake.users[ALICE].three_pids = saved
    assert result.code == 0, result.output
    assert "adds email alice@example.org" in result.stdout
    assert "adds email sam@example.org" not in result.stdout
    assert (
        'ignores email "\u017fam@example.org": folds to sam@example.org, which is not the address as sent'
        in result.stdout
    )


def test_an_oversized_password_is_refused_without_asking_ma1sd(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    config = homeserver(tmp_path, {"endpoint": fake.url})
    password = "p" * 1025
    result = check(runner, config, args=["--user", "alice"], stdin=password + "\n", secret=password)
    assert result.code == 4, result.output
    assert (
        "FAIL  login      @alice:example.org: password longer than 1024 bytes, refused without asking ma1sd"
        in result.stdout
    )
    assert fake.requests_for(CHECK_PATH) == []  # the password is read before any probe


# -- backend: rest -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(serve_module: Serve) -> FakeRestStore:
    server = serve_module(FakeRestStore(domain=SERVER_NAME))
    server.add_user(ALICE, ALICE_PASSWORD, display_name="Alice Liddell", emails=("alice@example.org",))
    return server


@pytest.mark.parametrize("password, code, verdict", [(ALICE_PASSWORD, 0, "accepted"), ("wrong-pw-789", 4, "refused")])
def test_user_check_with_the_rest_backend_asks_the_store(
    runner: Runner, store: FakeRestStore, tmp_path: Path, password: str, code: int, verdict: str
) -> None:
    store.reset()
    config = homeserver(tmp_path, {"endpoint": store.url, "backend": "rest"})
    result = check(runner, config, args=["--user", "alice"], stdin=password + "\n", secret=password)
    assert result.code == code, result.output
    assert "login      @alice:example.org: the REST store %s the credentials" % verdict in result.stdout
    # The probe (a made-up user of Synapse's domain), then the password
    # check, and nothing in ma1sd's protocol.
    assert [(r["method"], r["path"]) for r in store.requests] == [("POST", store.check_path)] * 2
    probe, checked = (json.loads(r["body"])["auth"] for r in store.requests)
    assert probe["mxid"] == "@rest-auth-provider-check:example.org"
    assert probe["password"] not in (ALICE_PASSWORD, password)
    assert checked["mxid"] == ALICE


def test_probe_tells_a_reachable_rest_store_that_serves_our_domain(
    runner: Runner, store: FakeRestStore, tmp_path: Path
) -> None:
    store.reset()
    result = check(runner, homeserver(tmp_path, {"endpoint": store.url, "backend": "rest"}), args=["--json"])
    assert result.code == 0, result.output
    http = result.json()["probe"]["http"]
    assert (http["status"], http["store_like"]) == (404, True)
    assert "answers like a REST identity store" in http["detail"]
    assert len(store.requests) == 1


def test_probe_detects_a_rest_store_of_another_domain(runner: Runner, tmp_path: Path) -> None:
    with FakeRestStore(domain="other.example") as other:
        result = check(runner, homeserver(tmp_path, {"endpoint": other.url, "backend": "rest"}))
    assert result.code == 3, result.output
    assert any(
        "HTTP 400: the store refused the request itself: is its domain example.org (Synapse's server_name)?" in line
        for line in result.lines("FAIL")
    ), result.output


def test_probe_tells_an_unreachable_rest_store(runner: Runner, tmp_path: Path) -> None:
    stopped = FakeRestStore().start()
    url = stopped.url
    stopped.stop()
    result = check(runner, homeserver(tmp_path, {"endpoint": url, "backend": "rest", "timeout": 2}))
    assert result.code == 3, result.output
    assert "connection refused" in result.stdout


# -- --user as a login takes it: emails and phone numbers ------------------------------------


def test_user_by_email_is_looked_up_as_a_first_login_would(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    config = homeserver(tmp_path, {"endpoint": fake.url})
    result = check(
        runner, config, args=["--user", "Alice@Example.org"], stdin=ALICE_PASSWORD + "\n", secret=ALICE_PASSWORD
    )
    assert result.code == 0, result.output
    assert any(
        line.startswith("OK    lookup     email alice@example.org -> @alice:example.org (")
        for line in result.lines("OK")
    )
    assert "OK    login      @alice:example.org: ma1sd accepted the credentials" in result.stdout
    assert "@alice@example.org" not in result.stdout
    assert [(r["medium"], r["address"]) for r in fake.lookups()] == [("email", "alice@example.org")]
    checked = [(r["user_id"], r["password"]) for r in fake.requests_for(CHECK_PATH)]
    assert checked == [(PROBE_USER_ID, PROBE_PASSWORD), (ALICE, ALICE_PASSWORD)]


def test_user_by_phone_number_in_json(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    config = homeserver(tmp_path, {"endpoint": fake.url})
    result = check(
        runner, config, args=["--user", "+44 20 7946 0000", "--json"], stdin=ALICE_PASSWORD, secret=ALICE_PASSWORD
    )
    assert result.code == 0, result.output
    user = result.json()["user"]
    assert user["name"] == "+44 20 7946 0000"
    assert user["threepid"] == {"medium": "msisdn", "address": "442079460000"}
    assert (user["user_id"], user["accepted"], user["error"]) == (ALICE, True, None)
    assert [(r["medium"], r["address"]) for r in fake.lookups()] == [("msisdn", "442079460000")]


def test_unknown_email_is_refused_without_sending_the_password(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    config = homeserver(tmp_path, {"endpoint": fake.url})
    result = check(
        runner, config, args=["--user", "nobody@example.org", "--json"], stdin=ALICE_PASSWORD, secret=ALICE_PASSWORD
    )
    assert result.code == 4, result.output
    report = result.json()
    assert report["errors"] == ["lookup: email nobody@example.org: ma1sd knows no user for it (%s)" % _ms(report)]
    user = report["user"]
    assert (user["user_id"], user["accepted"], user["error"], user["login"]) == (
        None,
        False,
        "no user for this email",
        None,
    )
    assert [r["user_id"] for r in fake.requests_for(CHECK_PATH)] == [PROBE_USER_ID]


def _ms(report: Dict[str, Any]) -> str:
    """Returns the duration at the end of the first error, as printed."""
    found = re.search(r"\(([^()]*ms)\)$", report["errors"][0])
    assert found is not None, report["errors"]
    return found.group(1)


def test_email_with_lookups_turned_off_is_refused(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    config = homeserver(tmp_path, {"endpoint": fake.url, "threepid_login": {"enabled": False}})
    result = check(runner, config, args=["--user", "alice@example.org"], stdin=ALICE_PASSWORD, secret=ALICE_PASSWORD)
    assert result.code == 4, result.output
    assert result.lines("FAIL")[0].startswith(
        "FAIL  lookup     email alice@example.org: looking up emails and phone numbers is turned off"
    )
    assert fake.lookups() == []
    assert [r["user_id"] for r in fake.requests_for(CHECK_PATH)] == [PROBE_USER_ID]


def test_lookup_answering_another_server_is_refused(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    fake.add_user("@eve:elsewhere.org", "pw-eve-1", emails=("eve@example.org",))
    try:
        config = homeserver(tmp_path, {"endpoint": fake.url})
        result = check(runner, config, args=["--user", "eve@example.org"], stdin="pw-eve-1", secret="pw-eve-1")
    finally:
        del fake.users["@eve:elsewhere.org"]
    assert result.code == 4, result.output
    assert any("email eve@example.org -> @eve:elsewhere.org" in line for line in result.lines("OK"))
    assert "'@eve:elsewhere.org' would be refused without asking ma1sd: user ID on another server" in result.stdout
    assert [r["user_id"] for r in fake.requests_for(CHECK_PATH)] == [PROBE_USER_ID]


def test_user_by_email_with_the_rest_backend_asks_the_store(
    runner: Runner, store: FakeRestStore, tmp_path: Path
) -> None:
    store.reset()
    config = homeserver(tmp_path, {"endpoint": store.url, "backend": "rest"})
    result = check(runner, config, args=["--user", "alice@example.org"], stdin=ALICE_PASSWORD, secret=ALICE_PASSWORD)
    assert result.code == 0, result.output
    assert any("lookup     email alice@example.org -> @alice:example.org" in line for line in result.lines("OK"))
    assert "login      @alice:example.org: the REST store accepted the credentials" in result.stdout
    assert [r["path"] for r in store.requests] == [store.check_path, store.lookup_path, store.check_path]


# -- --json: every documented field, null where not reached ----------------------------------

DOCUMENTED_TOP = {
    "version",
    "synapse_version",
    "config_files",
    "module",
    "server_name",
    "settings",
    "localdb_enabled",
    "probe",
    "user",
    "checks",
    "warnings",
    "errors",
    "exit_code",
}
DOCUMENTED_USER = {"name", "user_id", "threepid", "registrable", "checked", "accepted", "ms", "error", "login"}


def test_json_has_every_field_when_the_config_fails(runner: Runner, tmp_path: Path) -> None:
    config = homeserver(tmp_path, {"endpoint": "http://127.0.0.1:9", "timeout": -1})
    report = check(runner, config, args=["--json"]).json()
    assert report["exit_code"] == 2
    assert set(report) == DOCUMENTED_TOP
    assert report["probe"] == {"dns": None, "tcp": None, "tls": None, "http": None}
    assert (report["module"], report["settings"], report["user"]) == ({"section": "modules", "index": 0}, None, None)


def test_json_user_refused_locally_has_every_field(runner: Runner, fake: FakeMa1sd, tmp_path: Path) -> None:
    config = homeserver(tmp_path, {"endpoint": fake.url})
    result = check(runner, config, args=["--user", "@alice:elsewhere.org", "--json"], stdin=ALICE_PASSWORD)
    assert result.code == 4
    report = result.json()
    assert set(report) == DOCUMENTED_TOP
    assert report["probe"] == {"dns": None, "tcp": None, "tls": None, "http": None}
    assert report["user"] == {
        "name": "@alice:elsewhere.org",
        "user_id": None,
        "threepid": None,
        "registrable": None,
        "checked": True,
        "accepted": False,
        "ms": None,
        "error": "user ID on another server",
        "login": None,
    }


def test_json_wrong_password_sets_the_error_and_every_probe_field(
    runner: Runner, fake: FakeMa1sd, tmp_path: Path
) -> None:
    wrong = "not-the-password-789"
    config = homeserver(tmp_path, {"endpoint": fake.url})
    report = check(runner, config, args=["--user", "alice", "--json"], stdin=wrong, secret=wrong).json()
    assert report["exit_code"] == 4
    user = report["user"]
    assert set(user) == DOCUMENTED_USER
    assert (user["accepted"], user["error"], user["login"]) == (False, "ma1sd refused the credentials", None)
    probe = report["probe"]
    assert set(probe["dns"]) == {"ok", "host", "addresses", "ms", "error"}
    assert probe["dns"]["error"] is None
    assert set(probe["tcp"]) == {"ok", "address", "port", "ms", "error"}
    assert probe["tls"] is None
    assert set(probe["http"]) == {"ok", "url", "status", "ms", "ma1sd_like", "errcode", "detail", "error"}
    assert (probe["http"]["errcode"], probe["http"]["error"]) == (None, None)


def test_json_when_ma1sd_is_unreachable(runner: Runner, tmp_path: Path) -> None:
    config = homeserver(tmp_path, {"endpoint": "http://127.0.0.1:9"})
    result = check(runner, config, args=["--user", "alice", "--json"], stdin=ALICE_PASSWORD, secret=ALICE_PASSWORD)
    assert result.code == 3
    report = result.json()
    assert report["probe"]["tcp"]["ok"] is False
    assert report["probe"]["tcp"]["address"] is None
    assert (report["probe"]["tls"], report["probe"]["http"]) == (None, None)
    assert (report["user"]["checked"], report["user"]["accepted"], report["user"]["login"]) == (False, None, None)


# -- --version ---------------------------------------------------------------------------------


def test_version_prints_the_module_and_synapse(runner: Runner) -> None:
    result = runner.run(["--version"], None)
    assert result.code == 0, result.output
    found = re.fullmatch(r"rest_auth_provider (\S+), Synapse (.+), Python \S+\n", result.stdout)
    assert found is not None, result.stdout
    assert tuple(int(n) for n in re.findall(r"\d+", found.group(2))[:3]) == SYNAPSE_VERSION


def test_version_without_synapse() -> None:
    # Synapse made unimportable after the command's own imports (which still need it today).
    code = (
        "import sys; from rest_auth_provider import cli; sys.modules['synapse'] = None; "
        "sys.exit(cli.main(['--version']))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=str(ROOT),
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
        capture_output=True,
        text=True,
        timeout=REQUEST_TIMEOUT,
    )
    assert completed.returncode == 0, completed.stderr
    assert re.fullmatch(r"rest_auth_provider \S+, Synapse \(not installed\), Python \S+\n", completed.stdout)
