"""The library code a workflow job runs, as rule inputs (docs/RUNNING.md, Changing a criterion).

Snakemake reruns a job when its ``script:`` changes, but not when a module that script imports or an SQL concept
it reads changes: editing ``hftri_mimic/sql/followup.sql`` would leave every follow-up label as it was. Each rule
therefore lists, as inputs, the Python files of this repository's packages that its script imports (directly or
through other modules of these packages, with the packages' ``__init__.py``) and the SQL concept files it names.
A file whose content changes reruns the rule and what depends on it; a file only touched or checked out again
keeps its checksum, which Snakemake compares before rerunning, so nothing reruns.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

LIBRARY_PACKAGES = ("hftri_mimic", "models")
REPO_ROOT = Path(__file__).resolve().parents[2]
SQL_FOLDER = REPO_ROOT / "hftri_mimic" / "sql"


def module_file(module: str, root: Path = REPO_ROOT) -> Path | None:
    """The file of ``module`` (dotted name) when it belongs to one of our packages, else None."""
    parts = module.split(".")
    if parts[0] not in LIBRARY_PACKAGES:
        return None
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(path: Path, root: Path) -> str:
    """Dotted package that holds ``path`` (for a package's ``__init__.py``, the package itself)."""
    relative = path.relative_to(root).with_suffix("")
    parts = relative.parts[:-1]
    return ".".join(parts)


@cache
def imported_modules(path: Path, root: Path = REPO_ROOT) -> frozenset[str]:
    """Dotted names of everything ``path`` imports, anywhere in its body (relative imports resolved).

    ``from package import name`` yields both ``package`` and ``package.name``: the name may be a submodule.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    inside = path.is_relative_to(root)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if not inside:
                    continue
                package = _package_of(path, root).split(".")
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, node.module] if node.module else package)
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(names)


def _with_parents(module: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a module runs its packages' ``__init__`` first."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


# A hand-written walk rather than modulefinder: modulefinder follows every import into torch, transformers and the
# standard library (tens of seconds at every Snakefile parse); here only our two packages are followed.
@cache
def library_files(script: Path, root: Path = REPO_ROOT) -> tuple[Path, ...]:
    """The files of our packages that running ``script`` imports, transitively, sorted."""
    seen: set[Path] = set()
    pending = [Path(script).resolve()]
    while pending:
        current = pending.pop()
        for module in imported_modules(current, root):
            for name in _with_parents(module):
                found = module_file(name, root)
                if found is not None and found not in seen:
                    seen.add(found)
                    pending.append(found)
    seen.discard(Path(script).resolve())
    return tuple(sorted(seen))


def concept_files(names: tuple[str, ...] | list[str], folder: Path = SQL_FOLDER) -> list[Path]:
    """The SQL concept files ``hftri_mimic/sql/<name>.sql``; an unknown name is an error at parse time."""
    files = [folder / f"{name}.sql" for name in names]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"no SQL concept {', '.join(missing)} in {folder}")
    return files


def rule_code(script: Path, sql: tuple[str, ...] | list[str] = (), root: Path = REPO_ROOT) -> list[Path]:
    """Inputs for a rule running ``script``: the library files it imports and the SQL concepts it names."""
    return [*library_files(Path(script), root), *concept_files(sql, root / SQL_FOLDER.relative_to(REPO_ROOT))]


__all__ = ["concept_files", "imported_modules", "library_files", "module_file", "rule_code"]
