"""Release check (``tox -e packaging``), run from the repository root.

1. Builds the sdist and the wheel into ``dist/`` (the file names
   docs/installation.md gives) and runs ``twine check``.
2. The index path, ``pip install 'rest_auth_provider==<version>'`` as the
   README writes it: the same requirement is resolved with ``pip download
   --no-index --find-links dist/``, since an unpublished version cannot be
   fetched from the real index.
3. The two local paths the docs give, each into a fresh virtualenv without
   Synapse: the wheel file and the source checkout directory. Each must
   report the version, and ``rest-auth-provider --help`` and ``--version``
   must work; both must install the same files.
4. The lowest prometheus-client every supported Synapse accepts (setup.cfg's
   floor, 0.0.18 for Synapse 1.19): the module's metrics are exported with it.
5. The wheel, with ``--no-index``, into a fresh virtualenv that holds the
   newest Synapse: nothing of Synapse's may change, and the module must load
   when Synapse starts and log a user in.
"""

import re
import shutil
import subprocess
import sys
import tempfile
import venv
import zipfile
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from support.fake_ma1sd import FakeMa1sd  # noqa: E402
from support.harness import SynapseServer, module_block  # noqa: E402
from support.matrix_client import MatrixClient  # noqa: E402

# Read, not imported: this environment has neither Synapse nor the package.
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "rest_auth_provider" / "__init__.py").read_text()).group(1)  # type: ignore[union-attr]
DIST = ROOT / "dist"
WHEEL = DIST / ("rest_auth_provider-%s-py3-none-any.whl" % VERSION)
SDIST = DIST / ("rest_auth_provider-%s.tar.gz" % VERSION)


def run(*cmd: str) -> str:
    """Runs a command, fails on a non-zero exit; returns its stdout."""
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout


def freeze(python: str) -> Dict[str, str]:
    """Returns {distribution: version or direct URL} of an environment."""
    result = {}
    for line in run(python, "-m", "pip", "freeze", "--all").splitlines():
        for separator in ("==", " @ "):
            if separator in line:
                name, value = line.split(separator, 1)
                result[name.strip().lower().replace("_", "-")] = value.strip()
                break
    return result


def documented_requirement() -> str:
    """Returns the requirement of the README's `pip install` line."""
    readme = (ROOT / "README.md").read_text()
    found: List[str] = re.findall(r"^pip install '([^']+)'$", readme, re.M)
    assert found == ["rest_auth_provider==%s" % VERSION], found
    return found[0]


def build() -> None:
    """Builds the sdist and the wheel of this version into dist/, replacing older builds of it."""
    for stale in (WHEEL, SDIST):
        if stale.exists():
            stale.unlink()
    run(sys.executable, "-m", "build", "--outdir", str(DIST), str(ROOT))
    assert WHEEL.is_file() and SDIST.is_file(), sorted(p.name for p in DIST.iterdir())
    run(sys.executable, "-m", "twine", "check", "--strict", str(WHEEL), str(SDIST))
    check_wheel_holds_only_the_package()


def check_wheel_holds_only_the_package() -> None:
    """The wheel installs the package and its metadata, nothing else: not the
    tests, the benchmark or the ``support`` package they share."""
    with zipfile.ZipFile(WHEEL) as wheel:
        tops = {name.split("/", 1)[0] for name in wheel.namelist()}
    expected = {"rest_auth_provider", "rest_auth_provider-%s.dist-info" % VERSION}
    assert tops == expected, sorted(tops ^ expected)


def check_index_requirement(work: Path) -> None:
    """The documented requirement resolves to this version's wheel."""
    requirement = documented_requirement()
    target = work / "download"
    run(
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-index",
        "--find-links", str(DIST), "--dest", str(target), requirement,
    )  # fmt: skip
    assert sorted(p.name for p in target.iterdir()) == [WHEEL.name], list(target.iterdir())


def installed_files(python: str) -> Set[str]:
    """Returns the package's files in an environment, relative to site-packages."""
    listing = run(python, "-m", "pip", "show", "--files", "rest_auth_provider")
    files = listing.split("Files:", 1)[1].split()
    return {f for f in files if f.startswith("rest_auth_provider/") and not f.endswith(".pyc")}


def check_local_install(work: Path, name: str, source: str) -> Set[str]:
    """Installs ``source`` (a wheel file or a checkout) into a fresh virtualenv
    without Synapse, checks the version, ``--help`` and ``--version``; returns
    the installed files."""
    env = work / name
    venv.create(str(env), with_pip=True)
    python = str(env / "bin" / "python")
    command = str(env / "bin" / "rest-auth-provider")
    run(python, "-m", "pip", "install", "-q", source)
    freeze_ = freeze(python)
    assert "matrix-synapse" not in freeze_, "Synapse came along with %s" % source
    version = run(python, "-c", "import importlib.metadata as m; print(m.version('rest_auth_provider'))")
    assert version.strip() == VERSION, version
    failures: List[str] = []
    for args, expected in ((["--help"], "check"), (["--version"], VERSION)):
        print("+ %s %s" % (command, " ".join(args)), flush=True)
        result = subprocess.run([command, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0 or expected not in result.stdout:
            failures.append("%s %s -> exit %d:\n%s" % (name, " ".join(args), result.returncode, result.stdout[-2000:]))
    assert not failures, "\n".join(failures)
    return installed_files(python)


PROMETHEUS_FLOOR = re.search(r"prometheus-client>=([0-9.]+)", (ROOT / "setup.cfg").read_text()).group(1)  # type: ignore[union-attr]
METRICS_CHECK = """
from prometheus_client import REGISTRY, generate_latest
import prometheus_client, rest_auth_provider.metrics as m
m.logins.labels(outcome=m.SUCCESS).inc()
m.backend_request_duration.labels(endpoint="auth_login").observe(0.2)
m.backend_info.labels(backend="rest").set(1)
text = generate_latest(REGISTRY).decode()
for line in ('rest_auth_provider_logins_total{outcome="success"} 1.0',
             'rest_auth_provider_backend_info{backend="rest"} 1.0',
             'rest_auth_provider_ma1sd_request_duration_seconds_count{endpoint="auth_login"} 1.0'):
    assert line in text, (line, text)
print("metrics exported with prometheus-client", prometheus_client.__file__)
"""


def check_prometheus_floor(work: Path) -> None:
    """The wheel's metrics with the oldest prometheus-client setup.cfg allows."""
    python = str(work / "from-wheel" / "bin" / "python")
    run(python, "-m", "pip", "install", "-q", "prometheus-client==%s" % PROMETHEUS_FLOOR)
    assert freeze(python)["prometheus-client"] == PROMETHEUS_FLOOR
    run(python, "-c", METRICS_CHECK)


def check_in_synapse(work: Path) -> None:
    """The wheel into the newest Synapse's environment, from the file alone."""
    env = work / "synapse-env"
    venv.create(str(env), with_pip=True)
    python = str(env / "bin" / "python")
    run(python, "-m", "pip", "install", "-q", "matrix-synapse")
    before = freeze(python)
    run(python, "-m", "pip", "install", "--no-index", str(WHEEL))
    after = freeze(python)
    added = {k: v for k, v in after.items() if k not in before}
    changed = {k: (before[k], after[k]) for k in before if k in after and before[k] != after[k]}
    removed = [k for k in before if k not in after]
    print("added: %s; changed: %s; removed: %s" % (added, changed, removed))
    assert list(added) == ["rest-auth-provider"], added
    assert not changed and not removed, (changed, removed)
    run(str(env / "bin" / "rest-auth-provider"), "--help")

    with FakeMa1sd() as fake:
        fake.add_user("@release:example.org", "release-pw", "Release Check")
        server = SynapseServer(
            work / "synapse", module_block("modules", {"endpoint": fake.url}), name="packaging", python=python
        )
        with server:
            body = MatrixClient(server.url).login_ok("release", "release-pw")
            assert body["user_id"] == "@release:example.org"
            assert "rest_auth_provider %s loaded from 'modules:'" % VERSION in server.log_text()


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="rest-auth-packaging-"))
    try:
        build()
        check_index_requirement(work)
        from_wheel = check_local_install(work, "from-wheel", str(WHEEL))
        from_checkout = check_local_install(work, "from-checkout", str(ROOT))
        assert from_wheel == from_checkout, from_wheel ^ from_checkout
        assert "rest_auth_provider/py.typed" in from_wheel
        check_prometheus_floor(work)
        check_in_synapse(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("packaging check passed: %s, %s" % (WHEEL.relative_to(ROOT), SDIST.relative_to(ROOT)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
