"""Reading Synapse's config files the way Synapse does, finding and validating
the module's block, and the warning about Synapse's own password database."""

import json
import os
import re
from typing import Any, Dict, List, Sequence, Tuple

import yaml

from rest_auth_provider.cli.report import OK, WARN, Report, exception_text
from rest_auth_provider.config import ConfigProblem, ProviderConfig, parse_config
from rest_auth_provider.safetext import printable
from rest_auth_provider.transport import Transport

MODULE_NAME = "rest_auth_provider.RestAuthProvider"
SECTIONS = ("modules", "password_providers")
MODULES_SINCE = (1, 46)


class ConfigFailure(Exception):
    """The configuration cannot be used; the message says why."""


def find_config_files(paths: Sequence[str]) -> List[str]:
    """Returns the files Synapse would read for these ``-c`` paths, in order.

    A directory stands for its ``*.yaml`` files in sorted order, as in Synapse.
    """
    files: List[str] = []
    for path in paths:
        if os.path.isdir(path):
            entries = [os.path.join(path, name) for name in os.listdir(path) if name.endswith(".yaml")]
            files.extend(sorted(e for e in entries if os.path.isfile(e)))
        else:
            files.append(path)
    return files


def load_config_files(files: Sequence[str], report: Report) -> Dict[str, Any]:
    """Returns the merged configuration: a later file's top-level keys replace earlier ones.

    Raises ConfigFailure for a missing or unreadable file or invalid YAML.
    """
    if not files:
        raise ConfigFailure("no config file found (a directory given with -c holds no *.yaml file?)")
    merged: Dict[str, Any] = {}
    for path in files:
        shown = printable(path)
        try:
            with open(path, encoding="utf-8") as f:
                document = yaml.safe_load(f)
        except OSError as e:
            raise ConfigFailure("%s: cannot read it (%s)" % (shown, printable(e.strerror or str(e)))) from None
        except UnicodeDecodeError:
            raise ConfigFailure("%s: not UTF-8 text" % shown) from None
        except yaml.YAMLError as e:
            # Only the problem and its position: YAML's snippet of the line could show a secret.
            mark = getattr(e, "problem_mark", None)
            where = " at line %d, column %d" % (mark.line + 1, mark.column + 1) if mark is not None else ""
            problem = getattr(e, "problem", None) or type(e).__name__
            raise ConfigFailure("%s: not valid YAML%s: %s" % (shown, where, printable(str(problem)))) from None
        report.data["config_files"].append(path)
        if not isinstance(document, dict):
            report.line(WARN, "config", "%s: empty or not a mapping; Synapse ignores it too" % shown)
            continue
        report.line(
            OK, "config", "%s: read (%d top-level key%s)" % (shown, len(document), "" if len(document) == 1 else "s")
        )
        merged.update(document)
    return merged


def find_module_block(merged: Dict[str, Any]) -> Tuple[str, int, Dict[str, Any]]:
    """Returns (section, index, block) of the module's only block.

    Raises ConfigFailure when there is none, or more than one.
    """
    found: List[Tuple[str, int, Dict[str, Any]]] = []
    for section in SECTIONS:
        entries = merged.get(section)
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise ConfigFailure("'%s:' must be a list of blocks" % section)
        for index, entry in enumerate(entries):
            if isinstance(entry, dict) and str(entry.get("module", "")).strip() == MODULE_NAME:
                found.append((section, index, entry))
    if not found:
        raise ConfigFailure("no block with 'module: %s' under 'modules:' or 'password_providers:'" % MODULE_NAME)
    if len(found) > 1:
        where = ", ".join("%s" % _block_name(s, i) for s, i, _ in found)
        sections = {s for s, _, _ in found}
        both = " (in both 'modules:' and 'password_providers:')" if len(sections) > 1 else ""
        raise ConfigFailure(
            "the module is listed %d times%s: %s; keep one, or every login reaches ma1sd more than once"
            % (len(found), both, where)
        )
    return found[0]


def _block_name(section: str, index: int) -> str:
    """Returns how Synapse names a block in its error messages, e.g. ``modules.<item 0>``."""
    return "%s.<item %d>" % (section, index)


def check_back_door(merged: Dict[str, Any], report: Report) -> None:
    """Warns when Synapse's own password database still accepts passwords."""
    password_config = merged.get("password_config")
    enabled: Any = True
    if isinstance(password_config, dict) and "localdb_enabled" in password_config:
        enabled = password_config["localdb_enabled"]
    report.data["localdb_enabled"] = bool(enabled)
    if enabled:
        report.line(
            WARN,
            "back door",
            "password_config.localdb_enabled is not false (default true): users can set a local Synapse "
            "password that keeps working after ma1sd disables them; set password_config: {localdb_enabled: false}",
        )
    else:
        report.line(OK, "back door", "password_config.localdb_enabled: false: only ma1sd decides password logins")


def load_and_validate(paths: Sequence[str], report: Report) -> Tuple[Dict[str, Any], ProviderConfig, Transport]:
    """Returns the merged config, the module's validated config and an HTTP transport for it.

    Raises ConfigFailure when any of it is wrong.
    """
    merged = load_config_files(find_config_files(paths), report)
    section, index, block = find_module_block(merged)
    name = _block_name(section, index)
    report.data["module"] = {"section": section, "index": index}
    style = "the current style" if section == "modules" else "the legacy style, honoured by every release"
    report.line(OK, "module", "found under '%s:' (%s), item %d" % (section, style, index))
    synapse_version = report.data["synapse_version"]
    if section == "modules" and synapse_version and (0,) < _version_tuple(synapse_version) < MODULES_SINCE:
        report.line(
            WARN,
            "module",
            "the installed Synapse %s is older than 1.46 and cannot load it from 'modules:'; "
            "use 'password_providers:'" % printable(synapse_version),
        )
    try:
        config = parse_config(block.get("config"))
    except ConfigProblem as e:
        # "config.<path>: <message>", the config's keys and values escaped already.
        raise ConfigFailure("%s.%s" % (name, e)) from None
    try:
        transport = Transport(config)
    except Exception as e:
        raise ConfigFailure("%s.config: cannot load the TLS or header files: %s" % (name, exception_text(e))) from None
    report.line(OK, "module", "%s.config is valid" % name)
    settings = config.describe()
    report.data["settings"] = settings
    for key, value in _flatten(settings):
        # json.dumps escapes control characters (and all non-ASCII) in values.
        report.line("", "setting", "%s = %s" % (printable(key), json.dumps(value, ensure_ascii=True)))

    server_name = merged.get("server_name")
    if isinstance(server_name, str) and server_name:
        report.data["server_name"] = server_name
    else:
        report.line(WARN, "config", "no 'server_name' in the merged configuration (Synapse needs one)")
    check_back_door(merged, report)
    return merged, config, transport


def _version_tuple(version: str) -> Tuple[int, ...]:
    """Returns the leading numbers of a version string, e.g. (1, 46, 0)."""
    numbers = []
    for part in version.split("."):
        match = re.match(r"\d+", part)
        if not match:
            break
        numbers.append(int(match.group()))
    return tuple(numbers)


def _flatten(value: Any, prefix: str = "") -> List[Tuple[str, Any]]:
    """Returns (dotted key, scalar) pairs of a nested mapping; empty mappings stay whole."""
    if isinstance(value, dict) and value:
        pairs: List[Tuple[str, Any]] = []
        for key, item in value.items():
            pairs.extend(_flatten(item, prefix + str(key) + "."))
        return pairs
    return [(prefix.rstrip("."), value)]
