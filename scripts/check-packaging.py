"""Release check (``tox -e packaging``): builds the sdist and wheel, runs
``twine check``, installs the wheel into a fresh virtualenv that holds the
newest Synapse, confirms that no package of Synapse's changed, and that the
module loads when Synapse starts and logs a user in.

Run from the repository root.
"""

import glob
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import re  # noqa: E402

from tests.fake_ma1sd import FakeMa1sd  # noqa: E402
from tests.integration.harness import SynapseServer, module_block  # noqa: E402
from tests.integration.matrix_client import MatrixClient  # noqa: E402

# Read, not imported: importing the package would import Synapse.
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "rest_auth_provider" / "__init__.py").read_text()).group(1)  # type: ignore[union-attr]


def run(*cmd: str) -> str:
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout


def freeze(python: str) -> dict:
    """Returns {distribution: version or direct URL} of an environment."""
    result = {}
    for line in run(python, "-m", "pip", "freeze", "--all").splitlines():
        for separator in ("==", " @ "):
            if separator in line:
                name, value = line.split(separator, 1)
                result[name.strip().lower().replace("_", "-")] = value.strip()
                break
    return result


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="rest-auth-packaging-"))
    dist = work / "dist"
    run(sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT))
    artifacts = sorted(glob.glob(str(dist / "*")))
    assert any(a.endswith(".whl") for a in artifacts) and any(a.endswith(".tar.gz") for a in artifacts), artifacts
    run(sys.executable, "-m", "twine", "check", "--strict", *artifacts)

    env = work / "synapse-env"
    venv.create(str(env), with_pip=True)
    python = str(env / "bin" / "python")
    run(python, "-m", "pip", "install", "-q", "matrix-synapse")
    before = freeze(python)
    wheel = next(a for a in artifacts if a.endswith(".whl"))
    run(python, "-m", "pip", "install", wheel)
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
    print("packaging check passed: %s" % ", ".join(Path(a).name for a in artifacts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
