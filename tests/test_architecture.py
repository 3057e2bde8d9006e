"""The import direction of docs/architecture.md, checked on the source: a package may import
only packages below it in the data flow. Read with `ast`, so imports inside functions count too."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

WORKERS = Path(__file__).resolve().parent.parent / "workers"

# Lowest first; the same rank may import each other only within one package.
RANKS = {
    "settings": 0, "errors": 0,
    "ops": 1,
    "media": 2,
    "signals": 3,
    "bank": 4,
    "index": 5,
    "policy": 6,
    "stream": 7,
    "live": 8,
    "uploads": 9,
    "api": 10, "review": 10, "reports": 10, "retro": 10, "scan": 10,
    "stack": 11,
    "cli": 12,
}
TOPICS_FROM = RANKS["stream"]  # the wire contract is Kafka's: nothing below stream reads it


def _package(path: Path) -> str:
    rel = path.relative_to(WORKERS)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, first component under workers, or 'topics') of every import in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "workers" else [f"workers.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "topics":
                out.append((node.lineno, "topics"))
            elif parts[0] == "workers" and len(parts) > 1:
                out.append((node.lineno, parts[1]))
    return out


def violations() -> list[str]:
    bad = []
    for path in sorted(WORKERS.rglob("*.py")):
        if path.parent == WORKERS and path.stem == "__init__":
            continue
        pkg = _package(path)
        assert pkg in RANKS, f"{path}: package {pkg!r} has no place in docs/architecture.md (add it to RANKS there too)"
        for line, target in _imports(path):
            where = f"{path.relative_to(WORKERS.parent)}:{line}"
            if target == "topics":
                if RANKS[pkg] < TOPICS_FROM:
                    bad.append(f"{where}: {pkg} reads topics/ (only stream/ and above may)")
                continue
            if target == pkg:
                continue
            assert target in RANKS, f"{where}: imports workers.{target}, which docs/architecture.md does not place"
            if RANKS[target] > RANKS[pkg] or (RANKS[target] == RANKS[pkg] and RANKS[pkg] > 0):
                bad.append(f"{where}: {pkg} imports {target}, which is above it in the flow")
    return bad


def test_no_package_imports_one_above_it_in_the_flow():
    assert violations() == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The test above would pass vacuously if it read no imports: plant one that points up."""
    fake = tmp_path / "workers"
    (fake / "media").mkdir(parents=True)
    (fake / "media" / "x.py").write_text("def f():\n    from workers.index.matching import BankIndex\n")
    (fake / "index").mkdir()
    (fake / "index" / "y.py").write_text("import topics\nfrom workers.media import fetch\n")
    monkeypatch.setattr(sys.modules[__name__], "WORKERS", fake)
    found = violations()
    assert len(found) == 2
    assert any("media imports index" in f for f in found) and any("index reads topics" in f for f in found)


def test_every_package_is_in_the_architecture_doc():
    doc = (WORKERS.parent / "docs" / "architecture.md").read_text()
    for path in WORKERS.iterdir():
        if path.is_dir() and (path / "__init__.py").exists():
            assert f"`{path.name}/`" in doc, f"workers/{path.name}/ is not described in docs/architecture.md"
