"""The package's shape: imports point one way (CLI -> training -> core), with no cycle, and
`import mltp` loads nothing until a name is used."""
import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = {"mltp.model", "mltp.packed", "mltp.lora", "mltp.pooling", "mltp.perceiver", "mltp.loss", "mltp.embedder",
        "mltp.step", "mltp.config", "mltp.tokenizer", "mltp.layers"}
TRAINING = {"mltp.train", "mltp.gradcache"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """mltp module -> the mltp modules it imports, at the top or inside a function (read, not run)."""
    modules = {module_name(p): p for p in (ROOT / "mltp").rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                found |= {base} | {f"{base}.{a.name}" for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    graph = imports()
    assert "mltp.cli.data" in graph["mltp.cli.settings"]  # the graph sees the imports it should
    assert cycles(graph) == []
    assert cycles({**graph, "mltp.cli.data": graph["mltp.cli.data"] | {"mltp.cli.settings"}})  # and would find one


def test_imports_point_from_the_command_line_down_to_the_core():
    graph = imports()
    assert graph["mltp.distributed"] == set()  # the collectives the step gathers with: a leaf the core may use
    for name in CORE | TRAINING:
        assert not any(m.startswith("mltp.cli") for m in graph[name]), name
    for name in CORE:
        assert not graph[name] & TRAINING and not any(m.startswith("mltp.data") for m in graph[name]), name
    for name in [m for m in graph if m.startswith(("mltp.hygiene.", "mltp.data.", "mltp.formats."))]:
        assert not any(m.startswith("mltp.cli") for m in graph[name]) and not graph[name] & TRAINING, name


def test_import_mltp_is_light():
    code = "import sys, json, mltp; print(json.dumps(sorted(m for m in sys.modules if m.startswith(('mltp', 'torch')))))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    loaded = json.loads(done.stdout)
    assert loaded == ["mltp"], loaded
    lazy = subprocess.run([sys.executable, "-c", "import mltp; print(mltp.PoolerConfig.__module__)"], cwd=ROOT,
                          capture_output=True, text=True)
    assert lazy.stdout.strip() == "mltp.pooling"
