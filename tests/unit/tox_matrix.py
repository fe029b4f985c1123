"""Reads the Synapse test matrix out of tox.ini (for docs checks)."""

import configparser
import re
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[2]


def factor_lines(value: str) -> Dict[str, str]:
    """Returns {env: text} for tox's 'env1,env2: text' lines."""
    result: Dict[str, str] = {}
    for line in value.splitlines():
        match = re.match(r"\s*([\w,]+):\s*(.*)$", line)
        if match:
            for env in match.group(1).split(","):
                result.setdefault(env, "")
                result[env] += match.group(2) + "\n"
    return result


def matrix() -> List[Dict[str, str]]:
    """Returns one dict per syn* environment: env, synapse, python, topology flags."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(str(ROOT / "tox.ini"))
    testenv = parser["testenv"]
    deps = factor_lines(testenv["deps"])
    pythons = factor_lines(testenv["base_python"])
    setenv = factor_lines(testenv["setenv"])
    rows = []
    for env in parser["tox"]["envlist"].split():
        if not env.startswith("syn"):
            continue
        pin = re.search(r"matrix-synapse(?:\[[^\]]*\])?(==([\d.]+))?", deps[env])
        assert pin is not None
        rows.append(
            {
                "env": env,
                "synapse": pin.group(2) or "newest",
                "python": pythons[env].strip().replace("python", ""),
                "workers": "yes" if "RAP_WORKERS" in setenv.get(env, "") else "",
                "postgres": "yes"
                if "RAP_DATABASE" in setenv.get(env, "") or "RAP_WORKERS" in setenv.get(env, "")
                else "",
                "hostile": "yes" if "RAP_HOSTILE" in setenv.get(env, "") else "",
            }
        )
    return rows


def _version(text: str) -> Tuple[int, ...]:
    return tuple(int(x) for x in text.split(".")) if text != "newest" else (999,)


def compatibility_table() -> str:
    """Returns docs/compatibility.md's table, derived from tox.ini."""
    lines = [
        "| tox env | Synapse | Python | `password_providers:` | `modules:` | first login by email "
        "| workers + PostgreSQL + Redis | single process on PostgreSQL | hostile suite, security, metrics |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in matrix():
        version = _version(row["synapse"])
        lines.append(
            "| `%s` | %s | %s | yes | %s | %s | %s | %s | %s |"
            % (
                row["env"],
                row["synapse"],
                row["python"],
                "yes" if version >= (1, 46) else "no (needs 1.46)",
                "`modules:` only" if (1, 46) <= version < (1, 48) else "yes",
                "yes" if row["workers"] else "–",
                "yes" if row["postgres"] and not row["workers"] else "–",
                "yes" if row["hostile"] else "–",
            )
        )
    return "\n".join(lines)
