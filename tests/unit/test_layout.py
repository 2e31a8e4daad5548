"""The house's rooms: each import arrow points one way, and the processes load only what they need.

    atelier/core          the kernel (settings, SQL, units, jobs, queue, storage, auth): imports no other room
    atelier/gan           pure PyTorch: no Celery, SQL or S3, nothing else of atelier
    atelier/<feature>     catalogue, generation, training, trends, tryon, webhooks: the kernel and each other
    atelier/api, workers  the HTTP and Celery shells: the kernel, and the features they serve
    atelier/cli           the face on top

Imports inside functions count too: a circle that only closes at run time is still a circle to read.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "atelier"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import mod` names the module, `from mod import thing` the module itself
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_through_others():
    assert circles(import_graph()) == []


def test_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _room(module: str) -> str:
    return ".".join(module.split(".")[:2])


@pytest.mark.parametrize("room", ["atelier.core", "atelier.gan"])
def test_the_kernel_and_the_gan_import_no_other_room(room):
    graph = import_graph()
    outside = {
        f"{m} -> {t}" for m, targets in graph.items() if _room(m) == room for t in targets if _room(t) != room
    }
    assert not outside, sorted(outside)


def test_the_gan_imports_no_celery_sql_or_s3():
    for path in (PACKAGE / "gan").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                assert name.split(".")[0] not in {"celery", "sqlalchemy", "boto3", "kombu"}, (path, name)


def test_no_feature_imports_the_shells_above_it_but_their_deps():
    """Features may use the API's dependencies and the workers' lease helper, never the app objects."""
    graph = import_graph()
    features = {"catalogue", "generation", "training", "trends", "tryon", "webhooks", "imaging"}
    wrong = {
        f"{m} -> {t}"
        for m, targets in graph.items()
        if m.split(".")[1:2] and m.split(".")[1] in features
        for t in targets
        if t in {"atelier.api.main", "atelier.cli.main"} or t.startswith("atelier.cli.")
    }
    assert not wrong, sorted(wrong)


def test_the_api_process_never_loads_torch():
    code = (
        "import sys, atelier.api.main; print(sorted(m for m in ('torch', 'atelier.gan') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_client_imports_nothing_of_the_server():
    """atelier.client is what `pip install atelier` (no extras) serves: it may import httpx, pydantic and
    the standard library, and nothing else of atelier."""
    allowed_third_party = {"httpx", "pydantic"}
    graph = import_graph()
    outside = {f"{m} -> {t}" for m, targets in graph.items() if _room(m) == "atelier.client" for t in targets}
    outside = {edge for edge in outside if _room(edge.split(" -> ")[1]) != "atelier.client"}
    assert not outside, sorted(outside)
    for path in (PACKAGE / "client").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in allowed_third_party or top in sys.stdlib_module_names or top == "atelier", (
                    path,
                    name,
                )


def test_the_client_commands_load_without_the_server_packages():
    """The `atelier` command of the client-only install: its client commands are there, and importing it
    loads none of the server's packages (tests/integration/test_client_install.py installs it for real)."""
    blocked = {"torch", "celery", "sqlalchemy", "boto3", "fastapi", "PIL", "kombu"}
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {blocked!r}:\n"
        "            raise ModuleNotFoundError(name, name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from atelier.client import Client, AsyncClient\n"
        "from atelier.cli.main import cli\n"
        "print(sorted(cli.commands))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    for command in ("download", "jobs", "keys", "models", "schedules", "status", "submit"):
        assert f"'{command}'" in out.stdout, out.stdout
