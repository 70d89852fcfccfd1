"""No import circles in the project, and the layers read bottom to top (``LAYERS``: pyclient <- core <- keys <- audit
<- access <- fhir <- the domains <- ops <- wiring).

The graph is built with ``ast`` (nothing is imported) from every module of ``omnicare/`` and ``pyclient/``.
Two graphs are checked:

* module-level imports (what runs when a module is first imported) must have no cycle at all;
* all imports, function-level ones included, must have no cycle either, except the edges listed in
  ``DEFERRED``: an import inside a function that a genuine cycle needs, each with the reason.
  A function-level import that closes a cycle and is not listed fails the test, so a new circle cannot
  hide behind a lazy import.

A project import inside a function is allowed only where it must be there (a ``DEFERRED`` cycle, an
``AppConfig.ready``, a process that configures Django after importing the module, a browser-only module) and
says why, in the one convention ``# noqa: PLC0415 - why`` on the import's line (a longer why may sit on the
comment line right above, the line itself then ending ``# noqa: PLC0415``). Everything else is imported at the
top of the module. The audit trail is a sink: nothing it imports reaches access, fhir or sync.

And the layers point one way (``LAYERS``): no module imports, at any level, a module of a higher layer, except
the few edges in ``UPWARD`` (entry points and process wiring), each with why. Access needs facts of the clinical
record, but reads them through its own interface (``access.directory``, implemented by fhir); the FHIR store
offers hooks (``fhir.hooks``) that subscriptions plugs into, instead of importing subscriptions.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("omnicare", "pyclient")

_CELERY = ("Celery: the tasks module calls the services, and the services reach the task object only when "
           "they enqueue work (the worker imports tasks at start-up)")

#: (importer, imported) edges made inside a function on purpose, each with why. Shorter is better.
DEFERRED: dict[tuple[str, str], str] = {
    ("omnicare.bulk.services", "omnicare.bulk.tasks"): _CELERY,
    ("omnicare.cds.services", "omnicare.cds.tasks"): _CELERY,
    ("omnicare.hl7.services", "omnicare.hl7.tasks"): _CELERY,
    ("omnicare.hl7.outbound", "omnicare.hl7.tasks"): _CELERY,
    ("omnicare.subscriptions.services", "omnicare.subscriptions.tasks"): _CELERY,
    ("omnicare.sync.jobs", "omnicare.sync.tasks"): _CELERY,
    ("omnicare.ops.metrics", "omnicare.ops.services"): (
        "the Prometheus collector and request buffer are built at import time (settings, middleware), before "
        "the app registry is ready; they read and write the rollups through the services when scraped/flushed"),
}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            if any(part in ("migrations", "build", "dist", "__pycache__") for part in rel.parts):
                continue
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module ``name`` refers to (a ``from pkg import mod`` may name a submodule)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(mod: str, path: Path, modules: dict[str, Path]) -> Iterator[tuple[str, bool]]:
    """(imported module, at module level?) for every project import of ``mod``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    package = mod if is_pkg else mod.rpartition(".")[0]

    def walk(node: ast.AST, top: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from walk(child, False)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # annotations only: never executed
            elif isinstance(child, ast.Import):
                for a in child.names:
                    if (r := _resolve(a.name, modules)) is not None:
                        yield r, top
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    prefix = ".".join([*base, *([child.module] if child.module else [])])
                else:
                    prefix = child.module or ""
                for a in child.names:
                    r = _resolve(f"{prefix}.{a.name}", modules) if a.name != "*" else None
                    if r is None or r == mod:
                        r = _resolve(prefix, modules)
                    if r is not None and r != mod:
                        yield r, top
            else:
                yield from walk(child, top)

    yield from walk(tree, True)


def _graph(*, module_level_only: bool) -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for target, top in _imports(mod, path, modules):
            if (top or not module_level_only) and (mod, target) not in DEFERRED:
                graph[mod].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_at_module_level() -> None:
    assert _cycles(_graph(module_level_only=True)) == []


def test_no_import_circle_hidden_behind_a_function_level_import() -> None:
    assert _cycles(_graph(module_level_only=False)) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


#: The marker (noqa, code PLC0415) followed by a why (``- why``, ``(why)`` or ``: why``) on the import's line.
_WHY = re.compile(r"#\s*noqa:[^#]*\bPLC0415\b[,\sA-Z0-9]*[-(:]\s*\w")
_MARK = re.compile(r"#\s*noqa:[^#]*\bPLC0415\b")


def _says_why(lines: list[str], node: ast.stmt) -> bool:
    """The function-level import ``node`` carries the convention: the marker and a why, on its line(s) or above."""
    own = lines[node.lineno - 1 : node.end_lineno]
    if any(_WHY.search(line) for line in own):
        return True
    above = lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
    return any(_MARK.search(line) for line in own) and above.startswith("#") and len(above) > 3


def _unexplained(path: Path, mod: str, modules: dict[str, Path]) -> Iterator[str]:
    """``path:line`` of each project import inside a function of ``path`` that does not say why it is there."""
    src = path.read_text(encoding="utf-8")
    lines = src.splitlines()
    project = {m.partition(".")[0] for m in modules}

    def is_project(node: ast.Import | ast.ImportFrom) -> bool:
        if isinstance(node, ast.ImportFrom):
            return bool(node.level) or (node.module or "").partition(".")[0] in project
        return any(a.name.partition(".")[0] in project for a in node.names)

    def walk(node: ast.AST, inside: bool) -> Iterator[str]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from walk(child, True)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                if inside and is_project(child) and not _says_why(lines, child):
                    yield f"{path.relative_to(ROOT)}:{child.lineno}: {ast.unparse(child)}"
            else:
                yield from walk(child, inside)

    yield from walk(ast.parse(src), False)




def test_every_function_level_project_import_says_why() -> None:
    modules = _modules()
    found = [hit for mod, path in sorted(modules.items()) for hit in _unexplained(path, mod, modules)]
    assert found == [], "import at the top of the module, or say why not (# noqa: PLC0415 - why):\n" + "\n".join(found)


def test_the_why_convention() -> None:
    def says(src: str) -> bool:
        node = ast.parse(src.strip()).body[0].body[-1]  # type: ignore[attr-defined]
        assert isinstance(node, (ast.Import, ast.ImportFrom))
        return _says_why(src.strip().splitlines(), node)

    assert says("def f():\n    from . import tasks  # noqa: PLC0415 - deferred: tasks imports this module")
    assert says("def f():\n    from . import x  # noqa: E402, PLC0415 (the registry is ready only now)")
    assert says("def f():\n    # deferred: omnicare.x imports this module\n    from . import x  # noqa: PLC0415")
    assert not says("def f():\n    from . import x")
    assert not says("def f():\n    from . import x  # noqa: PLC0415")
    assert not says("def f():\n    from . import x  # lazy")
    assert not says("def f():\n    y = 1\n    from . import x  # noqa: PLC0415")


def test_every_deferred_edge_is_still_an_import() -> None:
    modules = _modules()
    for importer, imported in DEFERRED:
        assert (imported, False) in set(_imports(importer, modules[importer], modules)), (importer, imported)


#: The audit trail is a sink: it records what the layers above tell it (who, which patients, the purpose)
#: and imports none of them, at any level, not even through another module it imports.
SINK = "omnicare.audit"
ABOVE_THE_SINK = ("omnicare.access", "omnicare.fhir", "omnicare.sync")


def test_the_audit_trail_is_a_sink() -> None:
    graph = _graph(module_level_only=False)
    for importer, imported in DEFERRED:
        graph[importer].add(imported)
    seen: set[str] = set()
    todo = [m for m in graph if m == SINK or m.startswith(SINK + ".")]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph[m])
    above = sorted(m for m in seen if any(m == p or m.startswith(p + ".") for p in ABOVE_THE_SINK))
    assert above == [], f"{SINK} reaches {above}"


#: The layers, bottom to top: a module may import its own layer and the ones below, never one above. A name is
#: a package (its submodules included), except ``omnicare`` itself, which is only the package's ``__init__``.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("pyclient",),  # the sans-IO core the device runs too: imports no server module
    ("omnicare.core",),  # errors, the feed horizon, health, middleware, the FHIR reference syntax
    ("omnicare.keys",),  # key versions and wrapped secrets: imports nothing of the project
    ("omnicare.audit",),  # the sink every layer above writes to
    ("omnicare.access",),  # who may do what on which patients; reads the record through access.directory
    ("omnicare.fhir",),  # the FHIR store; calls access_check on every path; offers fhir.hooks
    ("omnicare.sync", "omnicare.subscriptions", "omnicare.bulk", "omnicare.hl7", "omnicare.cds", "omnicare.online",
     "omnicare.prefetch"),  # the domains built on the store (among them, the no-circle tests above apply)
    ("omnicare.ops",),  # operations: watches the domains (metrics, alerts, the jobs' health)
    ("omnicare", "omnicare.api", "omnicare.urls", "omnicare.asgi", "omnicare.routing", "omnicare.settings",
     "omnicare.celery"),  # process wiring: the routers, URLs, ASGI/WebSocket routing, settings, the Celery app
)

#: (importer, imported) package or module prefixes allowed to point upward, each with why. Shorter is better.
UPWARD: dict[tuple[str, str], str] = {
    ("omnicare.access.management.commands.create_demo_users", "omnicare.fhir"): (
        "a management command is an entry point at the top (nothing imports it): seeding the demo users also "
        "writes their Practitioner, CareTeam and ward resources through the FHIR store"),
    ("omnicare.core.broker", "omnicare.celery"): (
        "the broker check talks through the process's one Celery app object; omnicare/celery.py is wiring that "
        "imports no project module, so no layer is reached through it"),
    ("omnicare.core.views", "omnicare.api"): (
        "Django's handler500 (urls.py) answers a lost database with the API's 503 OperationOutcome; "
        "omnicare.api is imported by the URL configuration long before a request, and views is imported only "
        "by that configuration"),
}


def _layer(mod: str) -> int | None:
    best: tuple[int, int] | None = None  # (length of the matching name, layer)
    for i, names in enumerate(LAYERS):
        for name in names:
            if mod == name or (name != "omnicare" and mod.startswith(name + ".")):
                if best is None or len(name) > best[0]:
                    best = (len(name), i)
    return None if best is None else best[1]


def _upward_allowed(importer: str, imported: str) -> bool:
    return any((importer == a or importer.startswith(a + ".")) and (imported == b or imported.startswith(b + "."))
               for a, b in UPWARD)


def _upward_edges() -> list[tuple[str, str, bool]]:
    """(importer, imported, at module level?) of every import from a lower layer to a higher one."""
    modules = _modules()
    out = []
    for mod, path in sorted(modules.items()):
        for target, top in _imports(mod, path, modules):
            low, high = _layer(mod), _layer(target)
            if low is not None and high is not None and high > low:
                out.append((mod, target, top))
    return sorted(set(out))


def test_every_module_has_a_layer() -> None:
    assert [m for m in sorted(_modules()) if _layer(m) is None] == [], "add the package to LAYERS"


def test_the_layers_point_one_way() -> None:
    bad = [f"{a} -> {b}" + ("" if top else " (inside a function)")
           for a, b, top in _upward_edges() if not _upward_allowed(a, b)]
    assert bad == [], "a lower layer imports a higher one (invert it: an interface or a hook the upper layer " \
                      "registers in its AppConfig.ready):\n" + "\n".join(bad)


def test_every_upward_allowance_is_still_used() -> None:
    edges = _upward_edges()
    for a, b in UPWARD:
        assert any(_upward_allowed(x, y) and (x == a or x.startswith(a + ".")) and (y == b or y.startswith(b + "."))
                   for x, y, _ in edges), (a, b)


def test_the_layer_finder() -> None:
    assert _layer("omnicare") == len(LAYERS) - 1
    assert _layer("omnicare.access.services") == 4
    assert _layer("omnicare.fhir.directory") == 5
    assert _layer("omnicare.ops.metrics") == 7
    assert _layer("omnicare.somethingnew") is None
    assert _upward_allowed("omnicare.access.management.commands.create_demo_users", "omnicare.fhir.models")
    assert not _upward_allowed("omnicare.access.services", "omnicare.fhir.models")
