"""The shell commands in README.md and docs/*.md work as written.

Every ``sh``/``bash``/``console`` block is either run here (``RUN_HERE``) or
listed in ``NOT_RUN`` with the reason; a new block that is in neither table,
or a table entry whose block is gone, fails. Blocks are named by page and
the start of their first line. Independently of that:

* every ``rest-auth-provider`` command line in a shell block, a console
  transcript or the prose parses with the command's real parser;
* every ``pip install`` line of any block installs this version.

Running a block "here" means running its ``rest-auth-provider`` commands with
this environment's console script: ``docker exec [-i|-it] synapse`` is left
out (this machine is the container), ``/data/`` is a folder the test writes
(a ``homeserver.yaml`` and a ``conf.d/`` pointing at the fake ma1sd, which
knows alice), a password piped in (``pass show ... |``) or typed at the
prompt comes on stdin, and ``| jq`` is replaced by reading the JSON here.
"""

import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
import yaml

from rest_auth_provider import __version__
from rest_auth_provider.cli import build_parser
from support.fake_ma1sd import FakeMa1sd

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
SHELL = ("sh", "bash", "console", "shell")
ALICE_PASSWORD = "correct horse battery staple"
TIMEOUT = 120.0

INDEX = "needs the package index and a published release; tox -e packaging resolves the requirement against dist/"

# A block is named by its page and the start of its first line (the longest
# start that matches wins). (page, start) -> why the block is not run here.
NOT_RUN: Dict[Tuple[str, str], str] = {
    ("README.md", "pip install 'rest_auth_provider==1.1.0'"): INDEX,
    ("README.md", "scripts/demo"): "runs a homeserver until it is stopped; the demo's own tests start and stop it",
    ("README.md", "scripts/run-tests"): "the whole matrix, hours; CI runs it",
    ("docs/installation.md", "pip install 'rest_auth_provider==1.1.0'"): INDEX,
    ("docs/installation.md", "python -m build --wheel"): "tox -e packaging builds dist/ the same way",
    ("docs/installation.md", "pip install dist/rest_auth_provider-"): (
        "installs into this environment; tox -e packaging installs the wheel into a fresh virtualenv"
    ),
    ("docs/installation.md", "pip install ./rest_auth_provider"): (
        "installs into this environment; tox -e packaging installs the checkout into a fresh virtualenv"
    ),
    ("docs/installation.md", "kubectl create configmap"): "needs a Kubernetes cluster",
    ("docs/installation.md", "sudo /opt/venvs/matrix-synapse/bin/pip"): "needs the Debian package matrix-synapse-py3",
    ("docs/installation.md", "~/synapse/env/bin/pip"): "needs a Synapse virtualenv in ~/synapse/env",
    ("docs/performance.md", "tox -e bench"): "the benchmark takes 5 to 15 minutes on 2 cores",
    ("docs/rest-store.md", "python3 -c 'import getpass"): "reads a password from the terminal",
    ("docs/security.md", "curl -XPOST"): "needs a homeserver and an admin's access token",
    ("docs/troubleshooting.md", "curl -s -XPOST"): "needs the organisation's REST identity store",
}

# (page, start of the first line) of the blocks whose commands run here.
RUN_HERE = {
    ("README.md", "docker exec -it synapse rest-auth-provider check"),
    ("docs/installation.md", "rest-auth-provider --version"),
    ("docs/installation.md", "docker exec -it synapse rest-auth-provider check"),
    ("docs/rest-store.md", "docker exec -it synapse rest-auth-provider check"),
    ("docs/check.md", "docker exec synapse rest-auth-provider check -c /data/homeserver.yaml"),
    ("docs/check.md", "docker exec synapse rest-auth-provider check -c /data/homeserver.yaml -c /data/conf.d/"),
    ("docs/check.md", "pass show synapse/alice | docker exec -i synapse rest-auth-provider check"),
    ("docs/check.md", "rest-auth-provider check -c /data/homeserver.yaml --json | jq"),
}


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    text: str

    @property
    def first_line(self) -> str:
        return next(line.strip() for line in self.text.splitlines() if line.strip())

    def entry(self) -> Optional[Tuple[str, str]]:
        """Returns the entry of RUN_HERE or NOT_RUN that names this block, or None."""
        entries = [e for e in list(RUN_HERE) + list(NOT_RUN) if e[0] == self.page and self.first_line.startswith(e[1])]
        if not entries:
            return None
        return max(entries, key=lambda e: len(e[1]))


def fenced_blocks() -> List[Block]:
    """Returns every fenced block of the pages, indented ones included, dedented."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for m in re.finditer(r"^([ \t]*)```([^\n`]*)\n(.*?)^\1```[ \t]*$", text, re.M | re.S):
            indent = len(m.group(1))
            body = "\n".join(line[indent:] for line in m.group(3).splitlines())
            line = text[: m.start()].count("\n") + 1
            found.append(Block(str(page.relative_to(ROOT)), line, m.group(2).strip(), body))
    return found


def shell_blocks() -> List[Block]:
    return [b for b in fenced_blocks() if b.lang in SHELL]


def command_lines(text: str) -> Iterator[str]:
    """Yields the commands of a shell text: continuations joined, comments and prompts dropped."""
    for line in text.replace("\\\n", " ").splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line.startswith("$ "):
            line = line[2:]
        if line:
            yield line


def simple_commands(command: str) -> List[List[str]]:
    """Returns the words of each simple command of a shell line (split at ``&&``, ``;`` and ``|``)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: List[List[str]] = [[]]
    for token in lexer:
        if token in ("&&", ";", "|", "||"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def rest_auth_provider_argv(command: str) -> Optional[List[str]]:
    """Returns the arguments after ``rest-auth-provider`` in a command (pipes
    cut off), or None when the command does not run it."""
    for segment in command.split("|"):
        words = shlex.split(segment)
        if "rest-auth-provider" in words:
            return words[words.index("rest-auth-provider") + 1 :]
    return None


def documented_command_lines() -> List[Tuple[str, str]]:
    """Returns (page, command) for every rest-auth-provider command line: in
    shell blocks, in ``$ `` lines of console transcripts, and in inline code."""
    found = []
    for block in fenced_blocks():
        if block.lang in SHELL:
            lines = list(command_lines(block.text))
        else:
            lines = [line[2:] for line in block.text.splitlines() if line.startswith("$ ")]
        found += [(block.page, line) for line in lines if "rest-auth-provider " in line]
    for page in PAGES:
        # Inline code: a full command line (with -c, or an option alone), not
        # a mention such as `rest-auth-provider check` or `check --user`.
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for span in re.findall(r"`([^`]*rest-auth-provider [^`]*)`", text):
            span = re.sub(r"\s+", " ", span)
            argv = rest_auth_provider_argv(span) or []
            if "-c" in argv or argv[:1] in (["--help"], ["--version"]):
                found.append((str(page.relative_to(ROOT)), span))
    return found


def test_every_shell_block_is_run_here_or_listed_with_a_reason() -> None:
    assert not RUN_HERE & set(NOT_RUN)
    named = [(block, block.entry()) for block in shell_blocks()]
    new = ["%s:%d %s" % (b.page, b.line, b.first_line) for b, entry in named if entry is None]
    assert new == [], "shell blocks neither run here nor listed in NOT_RUN: %s" % new
    entries = [entry for _, entry in named]
    assert len(entries) == len(set(entries)), "one entry names two blocks: give a longer start"
    gone = [e for e in list(RUN_HERE) + list(NOT_RUN) if e not in entries]
    assert gone == [], "entries whose block is no longer in the docs: %s" % gone


def test_every_rest_auth_provider_command_line_parses(capsys: pytest.CaptureFixture[str]) -> None:
    parsed = []
    for page, command in documented_command_lines():
        argv = rest_auth_provider_argv(command)
        assert argv is not None, (page, command)
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:
            # --help and --version print and exit 0; any other exit is a usage error.
            assert e.code == 0 and argv in (["--help"], ["--version"]), (page, command, capsys.readouterr().err)
            continue
        assert args.command == "check", (page, command)
        parsed.append(command)
    assert len(parsed) >= 10, parsed


def test_every_pip_install_line_installs_this_version() -> None:
    allowed = {
        "rest_auth_provider==%s" % __version__,
        "./rest_auth_provider",  # a source checkout
    }
    wheel = "rest_auth_provider-%s-py3-none-any.whl" % __version__
    lines = 0
    for block in fenced_blocks():
        for command in command_lines(block.text):
            if "pip install" not in command:
                continue
            for words in simple_commands(command):
                # `pip install`, `/opt/venvs/.../bin/pip install`, `RUN pip install`, `- pip install`
                starts = [i for i in range(len(words) - 1) if words[i].endswith("pip") and words[i + 1] == "install"]
                if not starts:
                    continue
                targets = [w for w in words[starts[0] + 2 :] if not w.startswith("-")]
                assert targets, (block.page, block.line, command)
                for target in targets:
                    assert target in allowed or target.endswith("/" + wheel) or target == wheel, (
                        block.page,
                        block.line,
                        command,
                    )
                lines += 1
    assert lines >= 10, lines


# -- the blocks that run here --------------------------------------------------------


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Returns the stand-in for the container's /data: a homeserver.yaml and a
    conf.d/ whose module block points at a fake ma1sd that knows alice."""
    folder = tmp_path_factory.mktemp("data")
    with FakeMa1sd() as fake:
        fake.add_user("@alice:example.org", ALICE_PASSWORD, "Alice Liddell", emails=("alice@example.org",))
        homeserver = {
            "server_name": "example.org",
            "report_stats": False,
            "password_config": {"localdb_enabled": False},
            "modules": [{"module": "rest_auth_provider.RestAuthProvider", "config": {"endpoint": fake.url}}],
        }
        (folder / "homeserver.yaml").write_text(yaml.safe_dump(homeserver))
        (folder / "conf.d").mkdir()
        (folder / "conf.d" / "10-metrics.yaml").write_text(yaml.safe_dump({"enable_metrics": False}))
        yield folder


_runs: Dict[Tuple[str, Path], "subprocess.CompletedProcess[str]"] = {}


def run_here(command: str, data: Path) -> "subprocess.CompletedProcess[str]":
    """Runs a documented rest-auth-provider command here (once per command
    line: several pages give the same one); returns the finished process."""
    if (command, data) not in _runs:
        _runs[(command, data)] = _run(command, data)
    return _runs[(command, data)]


def _run(command: str, data: Path) -> "subprocess.CompletedProcess[str]":
    argv = rest_auth_provider_argv(command)
    assert argv is not None, command
    argv = [a.replace("/data/", "%s/" % data) for a in argv]
    executable = Path(sys.executable).parent / "rest-auth-provider"
    return subprocess.run(
        [str(executable), *argv],
        input=ALICE_PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


@pytest.mark.parametrize("key", sorted(RUN_HERE), ids=lambda key: "%s:%s" % key)
def test_block_runs_here(key: Tuple[str, str], data_folder: Path) -> None:
    block = next(b for b in shell_blocks() if b.entry() == key)
    commands = list(command_lines(block.text))
    assert commands
    for command in commands:
        done = run_here(command, data_folder)
        output = done.stdout + done.stderr
        assert done.returncode == 0, "%s\n%s" % (command, output)
        assert ALICE_PASSWORD not in output
        if rest_auth_provider_argv(command) == ["--version"]:
            assert __version__ in done.stdout
        elif "--json" in command:
            report = json.loads(done.stdout)
            assert report["exit_code"] == 0
            # What the documented jq filter reads is there.
            assert report["probe"]["http"]["status"] == 200
            assert isinstance(report["warnings"], list)
            if "--user" in command:
                assert report["user"]["user_id"] == "@alice:example.org"
                assert report["user"]["accepted"] is True
        else:
            assert "exit 0" in done.stdout, done.stdout
            if "--user" in command:
                assert "@alice:example.org" in done.stdout
