"""House rules read from the package's source."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "bento_tasks"
# Model declarations cannot go through outbox.py: the app registry imports them, and migrations describe them.
DECLARES_MODELS = {"models.py", "migrations"}


def modules() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(), str(path))) for path in sorted(PACKAGE.rglob("*.py"))]


def type_only(tree: ast.Module) -> set[ast.AST]:
    """Nodes under ``if TYPE_CHECKING:``: imported for annotations only, never at run time."""
    return {
        inner
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }


def test_only_the_outbox_module_imports_django_db():
    """Only bento_tasks/outbox.py imports django.db at run time (models and migrations declare the table): the
    ORM has one speaker."""
    speakers = set()
    for path, tree in modules():
        annotations_only = type_only(tree)
        for node in ast.walk(tree):
            if node in annotations_only:
                continue
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if any(name == "django.db" or name.startswith("django.db.") for name in names):
                speakers.add(path.relative_to(PACKAGE))
    assert {str(p) for p in speakers if p.parts[0] not in DECLARES_MODELS and p.name not in DECLARES_MODELS} == {
        "outbox.py"
    }
