"""The layers point one way: only ``_compat`` imports Synapse, only the
provider imports ``_compat``, and the config parser, the HTTP transport, the
backends and the ``check`` command import and run without Synapse.

The run without Synapse happens in a child interpreter in which any import of
``synapse`` fails, as in a virtualenv without it; the rule itself is read from
the package's source (its import statements), so that a new import that breaks
it fails here even before it breaks the command.
"""

import ast
import inspect
import json
import textwrap
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Set, Tuple

import yaml

import rest_auth_provider
from tests.unit.conftest import run_without_synapse

PACKAGE = Path(rest_auth_provider.__file__).resolve().parent
ROOT = PACKAGE.parent

# Run by run_without_synapse: in a child interpreter in which Synapse cannot be
# imported, the modules that have no business with Synapse are imported and the
# command is run.
WITHOUT_SYNAPSE = textwrap.dedent(
    """
    import contextlib, io, json, sys

    import rest_auth_provider
    import rest_auth_provider.backends
    import rest_auth_provider.cli
    import rest_auth_provider.config
    import rest_auth_provider.transport
    from rest_auth_provider.backends import make_backend
    from rest_auth_provider.config import parse_config
    from rest_auth_provider.transport import Transport

    config = parse_config({"endpoint": "http://127.0.0.1:1", "backend": "rest"})
    backend = make_backend(config, Transport(config))
    try:
        rest_auth_provider.RestAuthProvider
    except ImportError as e:
        provider = str(e)
    else:
        provider = "imported"
    help_text, check_text = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(help_text):
        try:
            rest_auth_provider.cli.main(["--help"])
        except SystemExit as e:
            help_code = e.code
    with contextlib.redirect_stdout(check_text):
        code = rest_auth_provider.cli.main(["check", "-c", sys.argv[1], "--json"])
    synapse = sorted(name for name in sys.modules if name == "synapse" or name.startswith("synapse."))
    print(json.dumps({
        "version": rest_auth_provider.__version__,
        "backend": backend.kind,
        "provider": provider,
        "help_code": help_code,
        "help": help_text.getvalue(),
        "check_code": code,
        "check": json.loads(check_text.getvalue()),
        "synapse_modules": synapse,
    }))
    """
)


def test_config_transport_backends_and_cli_run_without_synapse(tmp_path: Path) -> None:
    # Nothing listens on port 1: the check gets as far as the TCP connect.
    homeserver = tmp_path / "homeserver.yaml"
    block = {"module": "rest_auth_provider.RestAuthProvider", "config": {"endpoint": "http://127.0.0.1:1"}}
    homeserver.write_text(yaml.safe_dump({"server_name": "example.org", "modules": [block]}))
    process = run_without_synapse(WITHOUT_SYNAPSE, str(homeserver), timeout=120)
    assert process.returncode == 0, process.stderr
    outcome = json.loads(process.stdout)
    assert outcome["version"] == rest_auth_provider.__version__
    assert outcome["backend"] == "rest"
    # The provider is the one part that needs Synapse: asking for it says so.
    assert "blocked by the test" in outcome["provider"]
    assert outcome["help_code"] == 0
    assert outcome["help"].startswith("usage: rest-auth-provider")
    # The check ran to the end: a valid config, then ma1sd unreachable (exit 3).
    report = outcome["check"]
    assert outcome["check_code"] == report["exit_code"] == 3
    assert report["settings"]["endpoint"] == "http://127.0.0.1:1"
    assert report["probe"]["tcp"]["ok"] is False
    assert outcome["synapse_modules"] == []


def test_synapse_module_loader_finds_the_provider() -> None:
    # Synapse imports "rest_auth_provider" and then asks it for "RestAuthProvider".
    from synapse.util.module_loader import load_module

    from rest_auth_provider.provider import RestAuthProvider

    block = {"module": "rest_auth_provider.RestAuthProvider", "config": {"endpoint": "http://ma1sd:8090"}}
    if "config_path" in inspect.signature(load_module).parameters:  # 1.2x and later
        provider_class, config = load_module(block, ("modules", "<item 0>"))
    else:
        load_without_path: Callable[..., Tuple[Any, Any]] = load_module  # before 1.2x: (block) only
        provider_class, config = load_without_path(block)
    assert provider_class is RestAuthProvider
    assert config.endpoint == "http://ma1sd:8090"
    assert rest_auth_provider.RestAuthProvider is RestAuthProvider
    assert "RestAuthProvider" in rest_auth_provider.__all__


# -- the rule, read from the source ------------------------------------------------


def _modules() -> Iterator[Tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        yield name[: -len(".__init__")] if name.endswith(".__init__") else name, ast.parse(path.read_text())


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, tree: ast.Module) -> Dict[str, Set[str]]:
    """Returns the modules ``module`` imports, by when: "import" (at import
    time), "lazy" (inside a function) and "typing" (under TYPE_CHECKING only)."""
    found: Dict[str, Set[str]] = {"import": set(), "lazy": set(), "typing": set()}

    def visit(node: ast.AST, when: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for part in child.body:
                    visit_one(part, "typing")
                for part in child.orelse:
                    visit_one(part, when)
            else:
                visit_one(child, when)

    def visit_one(node: ast.AST, when: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and when == "import":
            when = "lazy"
        if isinstance(node, ast.Import):
            found[when].update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "%s: a relative import; the rule reads absolute ones" % module
            base = node.module or ""
            found[when].add(base)
            found[when].update("%s.%s" % (base, alias.name) for alias in node.names)
        visit(node, when)

    visit(tree, "import")
    return found


IMPORTS = {name: _imports(name, tree) for name, tree in _modules()}


def _importers(target: str, when: Tuple[str, ...]) -> List[str]:
    """Returns the package's modules that import ``target`` (or a submodule) ``when``."""
    return sorted(
        name
        for name, found in IMPORTS.items()
        if any(m == target or m.startswith(target + ".") for kind in when for m in found[kind])
    )


def test_the_rule_reads_the_imports_it_checks() -> None:
    # The control: the reader sees each kind of import where it is.
    assert "synapse.module_api" in IMPORTS["rest_auth_provider._compat"]["import"]
    assert "synapse.types" in IMPORTS["rest_auth_provider._compat"]["lazy"]
    assert "rest_auth_provider.provider" in IMPORTS["rest_auth_provider"]["typing"]
    assert "rest_auth_provider.provider" in IMPORTS["rest_auth_provider"]["lazy"]
    assert "rest_auth_provider.config" in IMPORTS["rest_auth_provider.cli.configfiles"]["import"]


def test_only_compat_imports_synapse() -> None:
    assert _importers("synapse", ("import", "lazy", "typing")) == ["rest_auth_provider._compat"]


def test_only_the_provider_imports_compat() -> None:
    assert _importers("rest_auth_provider._compat", ("import", "lazy")) == ["rest_auth_provider.provider"]


def test_only_the_package_reaches_the_provider_and_only_lazily() -> None:
    assert _importers("rest_auth_provider.provider", ("import",)) == []
    assert _importers("rest_auth_provider.provider", ("lazy",)) == ["rest_auth_provider"]
