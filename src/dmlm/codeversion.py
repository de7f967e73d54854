"""Fingerprint of the package code a stage runs, from what it imports (Snakemake does not track
imported modules; a hand list of files misses what it forgets, e.g. the fused scan).

An entry is ``module`` or ``module:function[,function...]`` (a stage CLI's ``register`` and one
handler: the other handlers' imports are not part of that command). From it the walk follows,
within the ``dmlm`` package and transitively:

- ``import`` / ``from ... import`` statements (absolute and relative, also inside functions; of the
  entry module only those outside functions and in the named functions, and in the module's
  functions those call), and the ``__init__.py`` of each imported module's packages;
- strings that name a ``dmlm`` module (dispatch tables such as ``dmlm.tokens.registry.ENCODERS``), except in
  ``dmlm.cli``, whose table only registers every stage's commands;
- strings that name a file in a visited module's folder or one folder below it (data a module reads
  beside itself, e.g. ``selective_scan.c`` of ``dmlm.model.cscan``, ``schema/config.schema.yaml``).

The fingerprint hashes the found files' paths and bytes. What each module imports is cached per
process and, given a ``cache`` file, across processes, by the module's size and mtime and the
file names beside it (parsing every module at each Snakemake start cost about 0.4 s).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ROOT_NAME = PACKAGE.name
DISPATCHERS = {f"{ROOT_NAME}.cli"}  # string tables that are not imports of the command that runs


def module_file(name: str, root: Path = PACKAGE) -> Path | None:
    parts = name.split(".")
    if parts[0] != ROOT_NAME:
        return None
    base = root.joinpath(*parts[1:])
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(path: Path, root: Path) -> str:
    name = _module_name(path, root)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def _imported(path: Path, nodes, root: Path) -> tuple[set[str], set[str], set[Path]]:
    """dmlm modules the ``nodes`` import, those they name in a string, and data files they name."""
    names: set[str] = set()
    strings: set[str] = set()
    for node in (n for top in nodes for n in ast.walk(top)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(path, root).split(".")
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)  # kept where it is a module
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.add(node.value)
    modules = {n for n in names if module_file(n, root) is not None} - {_module_name(path, root)}
    refs = set() if _module_name(path, root) in DISPATCHERS else {
        s for s in strings if s.startswith(f"{ROOT_NAME}.") and module_file(s, root) is not None}
    return modules, refs, _data_files(path, strings)


def _folder_files(folder: Path) -> dict[str, Path]:
    """Files in ``folder`` and its subfolders one level down, by name (the first found wins)."""
    found: dict[str, Path] = {}
    for sub in [folder, *sorted(d for d in folder.iterdir() if d.is_dir() and d.name != "__pycache__")]:
        for f in sorted(sub.iterdir()):
            if f.is_file() and f.suffix not in (".py", ".pyc"):
                found.setdefault(f.name, f) if sub == folder else found.setdefault(f"{sub.name}/{f.name}", f)
    return found


def _data_files(path: Path, strings: set[str]) -> set:
    """Files beside the module (or one folder below) that one of its strings names."""
    files = _folder_files(path.parent)
    names = set(strings)
    # Path(__file__).parent / "schema" / "config.schema.yaml": two strings naming one file
    names |= {f"{a}/{b}" for a in strings if a in {k.split("/")[0] for k in files if "/" in k} for b in strings}
    return {files[n] for n in names if n in files}


def _edges(path: Path, functions: tuple[str, ...] | None, root: Path):
    return _edges_at(path, functions, root, _stamp(path))


@functools.cache
def _edges_at(path: Path, functions, root: Path, stamp) -> tuple[frozenset, frozenset, frozenset]:
    """(imported modules, modules named in strings, data files) of a module, or of its top level
    and ``functions``; ``stamp`` (mtime, size) keeps an edited file from hitting the cache."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    if functions is None:
        nodes = [tree]
    else:
        defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        missing = [f for f in functions if f not in defs]
        if missing:
            raise ValueError(f"{path}: no function {missing[0]!r} (code fingerprint entry)")
        wanted, todo = set(), list(functions)
        while todo:  # the named functions and the module's functions they call
            name = todo.pop()
            if name not in wanted:
                wanted.add(name)
                todo += [n.func.id for n in ast.walk(defs[name])  # calls, not references (set_defaults)
                         if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in defs]
        nodes = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        nodes += [defs[name] for name in sorted(wanted)]
    return tuple(frozenset(x) for x in _imported(path, nodes, root))


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


class _Cache:
    """Whole-module edges by file: {path: {"key", "modules", "refs", "data"}}, kept in a JSON file."""

    def __init__(self, file: Path | None):
        self.file, self.changed = file, False
        try:
            self.entries = json.loads(file.read_text()) if file else {}
        except (OSError, ValueError):
            self.entries = {}

    def edges(self, path: Path, root: Path):
        key = f"{_stamp(path)}:{sorted(_folder_files(path.parent))}"
        hit = self.entries.get(str(path))
        if hit and hit.get("key") == key:
            return hit["modules"], hit["refs"], [root / d for d in hit["data"]]
        modules, refs, data = _edges(path, None, root)
        self.entries[str(path)] = {"key": key, "modules": sorted(modules), "refs": sorted(refs),
                                   "data": sorted(str(d.relative_to(root)) for d in data)}
        self.changed = True
        return modules, refs, data

    def save(self) -> None:
        if self.file and self.changed:
            from dmlm.storage import atomic_path

            with atomic_path(self.file) as tmp:
                tmp.write_text(json.dumps(self.entries))


def code_files(entries: tuple[str, ...], root: Path = PACKAGE, cache: Path | None = None) -> tuple[Path, ...]:
    """Every file the entries run (see the module docstring), sorted.

    A package imported only because a module below it is (its ``__init__`` runs) is walked without
    its string references: its dispatch table loads modules only when one of its functions is
    called, and then the package is imported by name."""
    files: set[Path] = set()
    todo: list[tuple[str, tuple[str, ...] | None, bool]] = []
    for entry in entries:
        module, _, functions = entry.partition(":")
        todo.append((module, tuple(functions.split(",")) if functions else None, True))
    done: dict[str, bool] = {}  # module -> walked with its string references
    known = _Cache(cache)
    while todo:
        module, functions, strings = todo.pop()
        path = module_file(module, root)
        if path is None:
            raise ValueError(f"code fingerprint: {module!r} is not a module of the {ROOT_NAME} package")
        if functions is None:
            if done.get(module, False) or (module in done and not strings):
                continue
            done[module] = strings
        files.add(path)
        modules, refs, data = _edges(path, functions, root) if functions else known.edges(path, root)
        files.update(data)
        todo += [(m, None, True) for m in (*modules, *(refs if strings else ()))]
        todo += [(m, None, False) for m in _parents(module)]
    known.save()
    return tuple(sorted(files))


def fingerprint(*entries: str, root: str | Path = PACKAGE, cache: str | Path | None = None) -> str:
    """Of the package at ``root`` (a workflow's own copy of ``src/dmlm``; default this one)."""
    root = Path(root).resolve()
    digest = hashlib.sha256()
    for path in code_files(tuple(entries), root, Path(cache) if cache else None):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
