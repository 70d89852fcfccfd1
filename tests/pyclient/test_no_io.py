"""The pyclient core stays sans-IO: no clocks, randomness, environment, files or network.

Every module of ``pyclient/`` outside ``pyclient/adapters/`` is parsed with
``ast`` (nothing is imported or executed) and may not import a module from
FORBIDDEN_MODULES (or any submodule of one) nor call a FORBIDDEN_CALLS builtin.
Those capabilities are passed in by the caller; adapters may use them.

Decisions: ``sys`` is forbidden (environment, argv, stdout); ``email`` is
forbidden because it imports socket/time/random; ``importlib`` is allowed
(``importlib.resources`` reads read-only package data such as the compression
dictionary); ``io`` is allowed (BytesIO is pure); ``logging`` is forbidden
(handlers write files/streams; return data, let the caller log).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pyclient

FORBIDDEN_MODULES = frozenset(
    {
        # clocks and randomness
        "time",
        "datetime",
        "random",
        "secrets",
        "uuid",
        "zoneinfo",
        # process, environment, files
        "os",
        "sys",
        "subprocess",
        "shutil",
        "tempfile",
        "pathlib",
        "glob",
        "signal",
        "platform",
        "ctypes",
        "mmap",
        "fcntl",
        "pickle",
        "shelve",
        "dbm",
        "sqlite3",
        "logging",
        # concurrency
        "threading",
        "multiprocessing",
        "concurrent",
        "asyncio",
        "selectors",
        "select",
        # network
        "socket",
        "ssl",
        "http",
        "urllib",
        "email",
        "smtplib",
        "ftplib",
        "xmlrpc",
        "requests",
        "httpx",
        # frameworks and host bridges
        "django",
        "ninja",
        "channels",
        "celery",
        "js",
        "pyodide",
        "cryptography",
    }
)
FORBIDDEN_CALLS = frozenset({"open", "exec", "eval", "compile", "__import__", "input", "breakpoint"})
EXCLUDED_DIRS = frozenset({"adapters", "build", "dist", "__pycache__"})


def violations(source: str, filename: str = "<string>") -> list[str]:
    """Every forbidden import or call in ``source``, as ``file:line: what``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        line = getattr(node, "lineno", 0)
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            if name.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{filename}:{line}: imports {name}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
            found.append(f"{filename}:{line}: calls {node.func.id}()")
    return found


def core_modules() -> Iterator[Path]:
    root = Path(pyclient.__file__).parent
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts[:-1]
        if any(p in EXCLUDED_DIRS or p.endswith(".egg-info") for p in rel):
            continue
        yield path


def test_core_modules_do_no_io() -> None:
    modules = list(core_modules())
    names = {p.name for p in modules}
    assert {"sync.py", "protocol.py", "store.py"} <= names  # the walk really found the core
    problems = [v for p in modules for v in violations(p.read_text("utf-8"), p.name)]
    assert problems == [], "pyclient core must stay sans-IO:\n" + "\n".join(problems)


def test_checker_catches_violations() -> None:
    bad = """
import json
import os.path
from datetime import datetime
from pyclient import merge

def later():
    import random
    from uuid import uuid4
    return open("x")
"""
    assert sorted(violations(bad, "bad.py")) == [
        "bad.py:10: calls open()",
        "bad.py:3: imports os.path",
        "bad.py:4: imports datetime",
        "bad.py:8: imports random",
        "bad.py:9: imports uuid",
    ]


def test_checker_allows_pure_stdlib_and_relative_imports() -> None:
    ok = "import json, hashlib, hmac, zlib, struct\nfrom . import merge\nfrom typing import Any\nimport io\n"
    assert violations(ok) == []
