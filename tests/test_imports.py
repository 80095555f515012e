"""The folder rules of ../shared/DESIGN.md, checked on the source: who may import whom,
and no import circle anywhere (imports under ``TYPE_CHECKING`` count too: a circle
hidden from the interpreter is still a circle for the reader)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "protocol": "protocol",
    "runtime": "runtime",
    "server": "server",
    "vision": "vision",
    "speech": "speech",
    "seealoud_client": "client-demo",
}
ALLOWED = {
    "protocol": set(),
    "runtime": set(),
    "vision": {"runtime"},
    "speech": {"runtime"},
    "server": {"protocol", "runtime", "vision", "speech"},
    "seealoud_client": {"protocol"},
}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in (ROOT / folder).glob("*.py"):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    return found


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """First-party modules ``path`` imports, anywhere in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name in known:
                out.add(name)
            elif name.split(".")[0] in PACKAGES and name.rsplit(".", 1)[0] in known:
                out.add(name.rsplit(".", 1)[0])
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, known) - {name} for name, path in known.items()}


def test_folders_import_only_what_they_may() -> None:
    broken = sorted(
        f"{module} imports {target}"
        for module, targets in graph().items()
        for target in targets
        if (src := module.split(".")[0]) != (dst := target.split(".")[0])
        and dst not in ALLOWED[src]
    )
    assert broken == []


def test_no_module_imports_the_app_but_the_cli() -> None:
    users = sorted(m for m, targets in graph().items() if "server.app" in targets)
    assert users in ([], ["server.cli"])


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every circle a depth-first walk meets, each as the path that closes it."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def test_there_is_no_import_circle() -> None:
    assert circles(graph()) == []


def test_the_checker_sees_a_circle_and_a_broken_rule(tmp_path: Path) -> None:
    """The checks above can fail: a planted circle and a planted wrong import are found."""
    a = tmp_path / "a.py"
    a.write_text("from server import app\nimport vision.change\n")
    known = {"server.app": a, "vision.change": a}
    assert imports_of(a, known) == {"server.app", "vision.change"}
    planted = {"server.app": {"server.session"}, "server.session": {"server.app"}}
    assert circles(planted) == [["server.app", "server.session", "server.app"]]
