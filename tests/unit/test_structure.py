"""The package's shape: no import cycle, and one place that knows the server.

Both read the source with :mod:`ast`, so they see imports inside functions
too; only imports under ``if TYPE_CHECKING:`` (type-only) are left out of the
graph.
"""

from __future__ import annotations

import ast
import typing as t
from pathlib import Path

import flask_sse_push

PACKAGE = Path(flask_sse_push.__file__).resolve().parent
NAME = "flask_sse_push"

#: The one subpackage allowed to know a particular server.
SERVERS = PACKAGE / "servers"


def _modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package by dotted name, with whether it is a package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = [NAME, *path.relative_to(PACKAGE).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        found[".".join(parts)] = (path, is_package)
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING") or (
        isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
    )


def _runtime_nodes(node: ast.AST) -> t.Iterator[ast.AST]:
    """Every node under ``node`` except the bodies of ``if TYPE_CHECKING:`` blocks."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield other
                yield from _runtime_nodes(other)
            continue
        yield child
        yield from _runtime_nodes(child)


def _imported(
    name: str, path: Path, is_package: bool, known: t.Collection[str], *, types: bool = False
) -> set[str]:
    """The package's modules that module ``name`` imports when it runs (and, with
    ``types``, for type checking too)."""
    base = name if is_package else name.rpartition(".")[0]
    targets: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree) if types else _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = base
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                module = package + (f".{node.module}" if node.module else "")
            else:
                module = node.module or ""
            targets.add(module)
            # ``from package import module`` imports that module too.
            targets.update(f"{module}.{alias.name}" for alias in node.names)
    return {target for target in targets if target in known and target != name}


def _import_graph(*, types: bool = False) -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: _imported(name, path, is_package, modules, types=types)
        for name, (path, is_package) in modules.items()
    }


def _bottom(graph: dict[str, set[str]]) -> set[str]:
    """The modules that import only modules of the bottom layer themselves: the
    leaves (which import nothing of the package), then what rests on them only."""
    bottom: set[str] = set()
    while True:
        more = {name for name, targets in graph.items() if name not in bottom and targets <= bottom}
        if not more:
            return bottom
        bottom |= more


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_imports_inside_functions() -> None:
    graph = _import_graph()
    # servers/__init__.py imports its server modules only inside detect().
    assert "flask_sse_push.servers.gunicorn" in graph["flask_sse_push.servers"]
    assert "flask_sse_push.servers.threaded" in graph["flask_sse_push.servers"]


def test_cycles_are_found() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_package_has_no_import_cycle() -> None:
    assert _cycles(_import_graph()) == []


def _server_specifics(path: Path) -> list[str]:
    """What in a module's code names gunicorn or gevent: imports, names, and
    strings other than documentation (``environ["gunicorn.socket"]``, for one).
    Documentation is docstrings and the ``help=`` text of the config table."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    docstrings |= {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.keyword) and node.arg == "help"
    }
    found = []
    for node in ast.walk(tree):
        texts: list[str] = []
        if isinstance(node, ast.Import):
            texts = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            texts = [node.module or "", *(alias.name for alias in node.names)]
        elif isinstance(node, ast.Name):
            texts = [node.id]
        elif isinstance(node, ast.Attribute):
            texts = [node.attr]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings:
                texts = [node.value]
        for text in texts:
            lowered = text.lower()
            if "gunicorn" in lowered or "gevent" in lowered:
                found.append(f"{path.relative_to(PACKAGE)}:{getattr(node, 'lineno', '?')}: {text}")
    return found


def test_the_check_finds_server_specifics() -> None:
    assert _server_specifics(SERVERS / "gunicorn.py")
    assert _server_specifics(SERVERS / "gevent.py")


def test_gunicorn_and_gevent_are_known_only_in_the_servers_subpackage() -> None:
    outside = [
        finding
        for path in sorted(PACKAGE.rglob("*.py"))
        if SERVERS not in path.parents
        for finding in _server_specifics(path)
    ]
    assert outside == []


def test_brokers_know_nothing_of_sockets_framing_or_http() -> None:
    """Brokers hand events to a neutral consumer (:mod:`flask_sse_push.brokers.handoff`):
    they import neither the stream runtime nor the server modules (only the OS-thread
    primitives :mod:`flask_sse_push.servers` re-exports), nor ``socket`` or Flask."""
    graph = _import_graph()
    allowed = {"flask_sse_push.servers"}  # os_lock, os_thread_local, thread_bound_sockets
    runtime_side = {
        name
        for name in graph
        if not name.startswith("flask_sse_push.brokers")
        and name
        not in ("flask_sse_push.event", "flask_sse_push.exceptions", "flask_sse_push.validation")
        and name not in allowed
    }
    brokers = {name: targets for name, targets in graph.items() if ".brokers" in name}
    assert brokers, "no broker modules found"
    reaching = {name: sorted(targets & runtime_side) for name, targets in brokers.items()}
    assert {name: found for name, found in reaching.items() if found} == {}
    for name in brokers:
        path, _ = _modules()[name]
        source = path.read_text()
        for banned in ("import socket", "from flask", "import flask", "werkzeug", "Sink"):
            assert banned not in source, f"{name} mentions {banned!r}"


def test_the_bottom_layer_is_what_rests_on_leaves_only() -> None:
    graph = {"leaf": set(), "on_leaf": {"leaf"}, "up": {"on_leaf", "loop"}, "loop": {"up"}}
    assert _bottom(graph) == {"leaf", "on_leaf"}


def test_servers_import_nothing_above_them() -> None:
    """The server seam is typed with Protocols (``servers/base.py``): the server
    modules import, even for types, only each other and the bottom layer of the
    package (socket helpers, the event type), never the runtime that uses them."""
    graph = _import_graph(types=True)
    bottom = _bottom(graph)
    servers = {name for name in graph if name.startswith(f"{NAME}.servers")}
    above = {
        name: sorted(target for target in targets - servers if target not in bottom)
        for name, targets in graph.items()
        if name in servers
    }
    assert {name: found for name, found in above.items() if found} == {}
    # What they do take from below: not a vacuous check.
    assert f"{NAME}.sockets" in graph[f"{NAME}.servers.fastpath"]
    assert f"{NAME}.sockets" in bottom


def test_the_socket_helpers_know_no_server() -> None:
    assert _server_specifics(PACKAGE / "sockets.py") == []
    assert not (SERVERS / "tcp.py").exists()


def _foreign_writes(source: str, fields: t.Collection[str]) -> list[str]:
    """Lines that assign a field named in ``fields`` on an object other than ``self``
    (``live.reason = ...``, ``self._live.reason = ...``), as ``"line: .field"``.
    ``self.<field> = ...`` is a class writing its own attribute."""
    found = []
    for node in ast.walk(ast.parse(source)):
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = [inner for target in node.targets for inner in ast.walk(target)]
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            if not isinstance(target, ast.Attribute) or not isinstance(target.ctx, ast.Store):
                continue
            if target.attr not in fields:
                continue
            if isinstance(target.value, ast.Name) and target.value.id == "self":
                continue
            found.append(f"{target.lineno}: .{target.attr}")
    return found


def test_the_check_finds_writes_to_another_object_s_fields() -> None:
    source = (
        "def f(live, self):\n"
        "    live.reason = 'x'\n"
        "    a = live.write_started = 1\n"
        "    self.reason = 'own'\n"
        "    self._live.cut += 1\n"
        "    live.other = 2\n"
        "    table[live.reason] = 3\n"
    )
    assert _foreign_writes(source, {"reason", "write_started", "cut"}) == [
        "2: .reason",
        "3: .write_started",
        "5: .cut",
    ]


def test_only_a_live_stream_s_methods_write_its_fields() -> None:
    """The stream is one object whose methods are the only writers of its fields:
    the body, the views, the fast path and the monitor call them."""
    from flask_sse_push.connections import LiveStream

    found = [
        f"{path.relative_to(PACKAGE)}:{finding}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for finding in _foreign_writes(path.read_text(), LiveStream.__slots__)
    ]
    assert found == []
