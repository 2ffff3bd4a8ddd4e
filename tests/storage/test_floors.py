"""Floors only look down (docs/architecture.md, "Floors"): every import in the package is
read from the source, and one that reaches a higher floor fails, naming the file and line.
Store differences stay in storage/stores/: no other module reads a dialect name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "observatory_core"

# From the bottom up; a package may import its own floor and the ones below.
FLOORS = (
    ("base",),
    ("semantic",),
    ("storage",),
    ("accounts",),
    ("filters",),
    ("rollups", "metrics", "traces", "ingest"),
    ("alerts", "exports", "reports", "demo", "dashboards"),
    ("api", "ui"),
    ("runtime",),
    ("__main__", "cli"),
)
LEVEL = {package: level for level, names in enumerate(FLOORS) for package in names}
LEAVES = ("accounts.permissions",)  # declarations any floor may import
# (importing module, imported module or package) -> why it stays for now. Each is work left.
EXCEPTIONS: dict[tuple[str, str], str] = {}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _dotted(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def _imports(path: Path) -> list[tuple[int, list[str]]]:
    """(line, modules inside observatory_core it may name) per import, lazy ones included:
    `from a.b import c` names a.b and, if c is a module, a.b.c."""
    here = _dotted(path).split(".")
    return _imports_in(path.read_text(), here if path.name == "__init__.py" else here[:-1])


def _imports_in(source: str, package: list[str]) -> list[tuple[int, list[str]]]:
    tree = ast.parse(source)
    # Imports under `if TYPE_CHECKING:` name types for annotations only; nothing runs them.
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *(node.module or "").split(".")]).strip(".")
                names = [f"observatory_core.{module}"]
            else:
                names = [node.module or ""]
            names += [f"{names[0]}.{alias.name}" for alias in node.names]
        else:
            continue
        inside = [
            n.removeprefix("observatory_core.") for n in names if n.startswith("observatory_core.")
        ]
        if inside:
            found.append((node.lineno, inside))
    return found


def _floor(module: str) -> int | None:
    return LEVEL.get(module.split(".")[0])


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _allowed(me: str, target: str) -> bool:
    return any(_within(target, leaf) for leaf in LEAVES) or any(
        me == who and _within(target, what) for who, what in EXCEPTIONS
    )


def _upward(path: Path) -> list[str]:
    """The imports of one file that reach a higher floor, one per import statement."""
    me = _dotted(path)
    mine = _floor(me)
    wrong = []
    for line, targets in _imports(path):
        for target in targets:
            theirs = _floor(target)
            if mine is None or theirs is None or theirs <= mine or _allowed(me, target):
                continue
            wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
            break
    return wrong


def test_every_package_has_a_floor():
    top = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in _modules()}
    assert top - {"__init__"} <= set(LEVEL), f"no floor for {sorted(top - set(LEVEL))}"


def test_imports_only_look_down():
    wrong = [line for path in _modules() for line in _upward(path)]
    assert not wrong, "imports from a higher floor:\n" + "\n".join(wrong)


def test_storage_imports_nothing_above_it():
    """No exception reaches into storage: the lowest floor above base is clean."""
    assert not [key for key in EXCEPTIONS if _within(key[0], "storage")]


def test_every_exception_is_still_needed():
    """An exception that no import needs any more is removed from the list."""
    used = set()
    for path in _modules():
        me = _dotted(path)
        for _line, targets in _imports(path):
            used |= {
                (who, what)
                for who, what in EXCEPTIONS
                for t in targets
                if me == who and _within(t, what)
            }
    assert set(EXCEPTIONS) <= used, f"exceptions no longer needed: {sorted(set(EXCEPTIONS) - used)}"


def test_the_checker_sees_an_upward_import():
    """The floor test can fail: a lazy (or relative) import of the rollups inside storage is
    caught."""
    source = "def f():\n    from observatory_core.rollups.maintain import rebuild_on\n"
    ((line, targets),) = _imports_in(source, ["storage"])
    assert line == 2 and "rollups.maintain" in targets
    ((_, relative),) = _imports_in("from ..rollups import maintain\n", ["storage"])
    assert "rollups.maintain" in relative
    assert _floor("rollups.maintain") > _floor("storage.bulk")
    assert not _allowed("storage.bulk", "rollups.maintain")


# -- dialect names ---------------------------------------------------------------------------

STORE_NAMES = {"sqlite", "postgresql"}


def _reads_dialect_name(tree: ast.AST) -> list[int]:
    """Lines that read or test a dialect name: `x.dialect.name`, `url.get_backend_name()`,
    a comparison with a variable called `dialect`, or a store's name as a string literal
    passed to or compared with anything but a type variant."""
    lines = []
    for node in ast.walk(tree):
        if (
            (
                isinstance(node, ast.Attribute)
                and node.attr == "name"
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "dialect"
            )
            or isinstance(node, ast.Attribute)
            and node.attr == "get_backend_name"
        ):
            lines.append(node.lineno)
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            named = any(
                (isinstance(s, ast.Name) and s.id == "dialect")
                or (isinstance(s, ast.Attribute) and s.attr == "dialect")
                for s in sides
            )
            literal = any(isinstance(s, ast.Constant) and s.value in STORE_NAMES for s in sides)
            if named or literal:
                lines.append(node.lineno)
        elif isinstance(node, ast.Call):
            func = node.func
            variant = isinstance(func, ast.Attribute) and func.attr == "with_variant"
            if not variant and any(
                isinstance(a, ast.Constant) and a.value in STORE_NAMES for a in node.args
            ):
                lines.append(node.lineno)
    return lines


def test_only_the_store_modules_read_a_dialect_name():
    """Migrations are per-store scripts by nature (Alembic) and may branch on the dialect."""
    wrong = []
    for path in _modules():
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(("storage/stores/", "storage/migrations/")):
            continue
        for line in _reads_dialect_name(ast.parse(path.read_text())):
            wrong.append(f"{relative}:{line}")
    assert not wrong, "dialect names read outside storage/stores/:\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    "source",
    [
        "if conn.dialect.name == 'postgresql': pass",
        "x = engine.dialect.name",
        "if dialect == 'sqlite': pass",
        "q = q.with_hint(t, 'INDEXED BY ix', 'sqlite')",
        "b = url.get_backend_name()",
    ],
)
def test_the_dialect_check_can_fail(source):
    assert _reads_dialect_name(ast.parse(source))
