"""The README's demo: starts, prints curl lines that work, stops on Ctrl-C."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.integration.conftest import BACKEND

ROOT = Path(__file__).resolve().parents[2]


def test_demo_prints_working_logins_and_stops_cleanly() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.demo", "--backend", BACKEND],
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        deadline = time.monotonic() + 180
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        output = "".join(lines)
        assert ("Stand-in REST store:" if BACKEND == "rest" else "Stand-in ma1sd:") in output, output
        curls = re.findall(r"curl -s -XPOST (\S+) -d '(\{.*\})'", output)
        assert len(curls) == 2, output
        for url, body in curls:
            r = requests.post(url, json=json.loads(body), timeout=30)
            assert r.status_code == 200, (url, r.text)
            assert r.json()["user_id"] == "@alice:example.org"
        profile_url = re.search(r"curl -s (\S+/profile/\S+)", output)
        assert profile_url is not None
        assert requests.get(profile_url.group(1), timeout=30).json()["displayname"] == "Alice Liddell"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            # Still stop it (and, through its SIGTERM handler, its Synapse) before failing.
            proc.terminate()
            proc.communicate(timeout=60)
            raise
    assert proc.returncode == 0
    assert "Stopping..." in rest
