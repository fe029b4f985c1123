"""The README's demo, run as a user runs it (``scripts/demo``): it prints its
config files, a ``check`` line and curl lines that work, runs with the
back door closed, and stops completely on every stop path: Ctrl-C in a
terminal (two SIGINTs 0.3 s apart to its process group), SIGINT or SIGTERM
to the PID ``scripts/demo`` runs as, a stop while Synapse is still starting,
and its own failure (Synapse cannot start; Synapse dies under it). After
each: the demo exited, Synapse's process is gone, no traceback, and the
demo's temp folder (TMPDIR, one per test) is empty again.

The stand-in backend is a thread of the demo process (the banner says so),
so it is gone when that process is; its PID is the one checked.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, List, Optional

import pytest
import requests

from tests.integration.conftest import BACKEND

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scripts" / "demo"
# Generous bounds for waiting on the demo (a few seconds unloaded); reaching
# one fails the test, but nothing asserts how fast it was.
START_DEADLINE = 240.0
STOP_DEADLINE = 120.0
READY = "Press Ctrl-C to stop"


class Demo:
    """``scripts/demo`` running in its own session, its output collected by a thread."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.tmpdir = tmp_path / "tmp"
        self.tmpdir.mkdir()
        env = dict(os.environ, TMPDIR=str(self.tmpdir), RAP_DEMO_PYTHON=sys.executable)
        self.proc = subprocess.Popen(
            [str(DEMO), *args],
            cwd=str(ROOT),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            # Its own process group, as a terminal's foreground job has: a
            # "Ctrl-C" is then os.killpg(pid, SIGINT).
            start_new_session=True,
        )
        self.lines: List[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.lines.append("")  # end of output
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def wait_for(self, text: str, deadline: float = START_DEADLINE) -> str:
        """Returns the output once ``text`` appeared in it; fails at the end
        of the output or after ``deadline`` seconds."""
        end = time.monotonic() + deadline
        with self._changed:
            while True:
                output = "".join(self.lines)
                if text in output:
                    return output
                assert not self.lines or self.lines[-1] != "", "demo ended before %r:\n%s" % (text, output)
                left = end - time.monotonic()
                assert left > 0, "no %r within %.0f s:\n%s" % (text, deadline, output)
                self._changed.wait(left)

    def wait_for_exit(self) -> int:
        """Returns the demo's exit code (fails if it is still running after STOP_DEADLINE)."""
        try:
            code = self.proc.wait(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            pytest.fail("the demo did not exit within %.0f s:\n%s" % (STOP_DEADLINE, self.output))
        self._reader.join(timeout=STOP_DEADLINE)
        return code

    def synapse_pid(self) -> int:
        match = re.search(r"Synapse's PID (\d+)", self.output)
        assert match is not None, self.output
        return int(match.group(1))

    def kill_everything(self) -> None:
        """After a failed test: no process may outlive it."""
        match = re.search(r"Synapse's PID (\d+)", self.output)
        for pid in [self.proc.pid] + ([int(match.group(1))] if match else []):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(timeout=STOP_DEADLINE)


def alive(pid: int) -> bool:
    """Returns True while ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.fixture
def start_demo(tmp_path: Path) -> Iterator[Any]:
    demos: List[Demo] = []

    def start(*args: str) -> Demo:
        demo = Demo(tmp_path, "--backend", BACKEND, *args)
        demos.append(demo)
        return demo

    yield start
    for demo in demos:
        demo.kill_everything()


def assert_stopped_completely(demo: Demo, code: int, synapse_pid: Optional[int]) -> str:
    """Waits for the demo to exit; asserts the exit code, no traceback,
    Synapse gone and nothing left in its temp folder. Returns the output."""
    assert demo.wait_for_exit() == code, demo.output
    output = demo.output
    assert "Traceback" not in output, output
    assert "KeyboardInterrupt" not in output, output
    if synapse_pid is not None:
        assert not alive(synapse_pid), "Synapse (PID %d) outlived the demo:\n%s" % (synapse_pid, output)
    assert sorted(os.listdir(str(demo.tmpdir))) == [], output
    return output


def test_demo_prints_a_working_setup_and_stops_on_ctrl_c(start_demo: Any) -> None:
    demo = start_demo()
    output = demo.wait_for(READY)
    assert ("Stand-in REST store:" if BACKEND == "rest" else "Stand-in ma1sd:") in output, output
    # The PID scripts/demo runs as is the demo itself (no tox or shell in between).
    with open("/proc/%d/cmdline" % demo.proc.pid) as f:
        assert "support.demo" in f.read().split("\0"), output
    assert "(or kill %d)" % demo.proc.pid in output, output
    synapse_pid = demo.synapse_pid()
    assert alive(synapse_pid)

    # The config files it names exist and hold the module block and the closed back door.
    files = re.findall(r"^  (/\S+\.yaml)", output, re.M)
    assert len(files) == 2 and all(Path(f).is_file() for f in files), output
    assert "module: rest_auth_provider.RestAuthProvider" in Path(files[-1]).read_text()
    assert "localdb_enabled: false" in output and "localdb_enabled: false" in Path(files[-1]).read_text()

    # The check line works as pasted (the password on stdin), back door closed.
    check = re.search(r"^  (\S*rest-auth-provider check .* --user alice)$", output, re.M)
    assert check is not None, output
    result = subprocess.run(
        check.group(1), shell=True, input="wonderland\n", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert result.returncode == 0, result.stdout
    assert re.search(r"^OK +back door", result.stdout, re.M), result.stdout

    # The logins work as printed; the email one is a true first login.
    curls = re.findall(r"curl -s -XPOST (\S+) -d '(\{.*\})'", output)
    assert len(curls) == 2, output
    (name_url, name_body), (email_url, email_body) = curls
    assert json.loads(email_body)["identifier"]["medium"] == "email"
    profiles = dict(
        (match.group(2), match.group(1)) for match in re.finditer(r"curl -s (\S+/profile/(@\S+))$", output, re.M)
    )
    assert set(profiles) == {"@alice:example.org", "@bob:example.org"}, output
    assert requests.get(profiles["@bob:example.org"], timeout=30).status_code == 404
    r = requests.post(email_url, json=json.loads(email_body), timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] == "@bob:example.org"
    assert requests.get(profiles["@bob:example.org"], timeout=30).json()["displayname"] == "Bob the Builder"
    r = requests.post(name_url, json=json.loads(name_body), timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] == "@alice:example.org"
    assert requests.get(profiles["@alice:example.org"], timeout=30).json()["displayname"] == "Alice Liddell"

    # With localdb_enabled: false the module's back-door WARNING is not logged.
    log = re.search(r"^Synapse's log: (\S+)$", output, re.M)
    assert log is not None, output
    log_text = Path(log.group(1)).read_text()
    assert "rest_auth_provider" in log_text  # the module did log (it was loaded)
    warnings = [line for line in log_text.splitlines() if " - WARNING - " in line]
    assert [line for line in warnings if "rest_auth_provider" in line or "localdb_enabled" in line] == []

    # Ctrl-C in a terminal (or under tox): SIGINT to the process group, and a
    # second one 0.3 s later while the demo is stopping.
    os.killpg(demo.proc.pid, signal.SIGINT)
    time.sleep(0.3)
    os.killpg(demo.proc.pid, signal.SIGINT)
    output = assert_stopped_completely(demo, 0, synapse_pid)
    assert output.count("Stopping...") == 1, output


@pytest.mark.backend("ma1sd")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_demo_stops_on_a_signal_to_its_pid(start_demo: Any, signum: int) -> None:
    demo = start_demo()
    demo.wait_for(READY)
    synapse_pid = demo.synapse_pid()
    os.kill(demo.proc.pid, signum)
    output = assert_stopped_completely(demo, 0, synapse_pid)
    assert "Stopping..." in output


@pytest.mark.backend("ma1sd")
def test_demo_stops_while_synapse_is_starting(start_demo: Any) -> None:
    demo = start_demo()
    demo.wait_for("Starting Synapse")
    os.killpg(demo.proc.pid, signal.SIGINT)
    output = assert_stopped_completely(demo, 0, None)
    assert READY not in output
    # Synapse, if it got started, had its PID in no banner: its folder is gone
    # with its database and log (checked above), and no Synapse of this
    # demo's temp folder runs.
    assert not [pid for pid in synapse_pids() if str(demo.tmpdir) in cmdline(pid)]


@pytest.mark.backend("ma1sd")
def test_demo_fails_cleanly_when_its_port_is_taken(start_demo: Any) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        demo = start_demo("--port", str(port))
        output = assert_stopped_completely(demo, 1, None)
    # (Synapse 1.19 exits with 0 here, later releases with 1.)
    assert "The demo failed: Synapse exited while starting (exit code " in output, output
    assert "Address already in use" in output, output
    assert "Stopping..." in output


@pytest.mark.backend("ma1sd")
def test_demo_fails_cleanly_when_synapse_dies(start_demo: Any) -> None:
    demo = start_demo()
    demo.wait_for(READY)
    synapse_pid = demo.synapse_pid()
    os.kill(synapse_pid, signal.SIGKILL)
    output = assert_stopped_completely(demo, 1, synapse_pid)
    assert "The demo failed: Synapse exited by itself (exit code -9)" in output, output


def synapse_pids() -> List[int]:
    """Returns the PIDs of the running Synapse homeservers on this machine."""
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and "synapse.app.homeserver" in cmdline(int(p))]


def cmdline(pid: int) -> str:
    try:
        with open("/proc/%d/cmdline" % pid) as f:
            return f.read().replace("\0", " ")
    except OSError:
        return ""
