"""The import rules between the project's packages, read from the source with ast (nothing is imported).

Layers, ground first: `model.geometry` (imports none of ours) <- `pipeline.contract` (the Lance contract) <-
`model` <- `pipeline` | `trainer` | `benchmark` <- `mfm` (the command, the demo, synthetic media). `config_files`
(YAML-config checking) sits beside the ground. Only `pipeline.contract` of pipeline/ is imported by the other
packages; pipeline/ and trainer/ never import each other; nothing imports mfm/. Lazy imports inside functions
count too. tests/ and benchmark/perf/ are harnesses that measure every part and may import any of it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("config_files", "model", "pipeline", "trainer", "benchmark", "mfm")
HARNESSES = ("benchmark.perf",)
# unit -> the units it may import (a unit is a package, or one of its parts named here); longest name wins
ALLOWED: dict[str, tuple[str, ...]] = {
    "config_files": (),
    "model.geometry": (),
    "pipeline.contract": ("pipeline.contract", "model.geometry"),
    "model": ("model", "pipeline.contract"),
    "pipeline": ("pipeline", "model", "config_files"),
    "trainer": ("trainer", "model", "pipeline.contract", "config_files"),
    "benchmark": ("benchmark", "model", "pipeline.contract", "config_files"),
    "mfm": ("mfm", "model", "benchmark", "pipeline.contract", "config_files"),
}


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str | None:
    """The rule unit a module belongs to (None: not one of our packages)."""
    units = sorted((u for u in ALLOWED if module == u or module.startswith(u + ".")), key=len)
    return units[-1] if units else None


def imported_modules(root: Path, path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of one of our packages in `path`, top-level or inside a function."""
    package = module_name(root, path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(root, path)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:  # `from pipeline import commits` imports the module pipeline.commits
                sub = f"{base}.{alias.name}"
                is_module = (root / Path(*sub.split("."))).with_suffix(".py").exists() or (
                    root / Path(*sub.split(".")) / "__init__.py"
                ).exists()
                found.append((node.lineno, sub if is_module else base))
    return [(line, m) for line, m in found if m.split(".")[0] in PACKAGES]


def violations(root: Path) -> list[str]:
    """Every import in the tree under `root` that breaks `ALLOWED`, as "file:line: a -> b"."""
    bad = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            importer = module_name(root, path)
            if any(importer == h or importer.startswith(h + ".") for h in HARNESSES):
                continue
            unit = unit_of(importer)
            for line, target in imported_modules(root, path):
                if not any(target == a or target.startswith(a + ".") for a in ALLOWED[unit]):
                    bad.append(f"{path.relative_to(root)}:{line}: {unit} -> {target}")
    return bad


def test_the_packages_import_only_what_their_layer_allows():
    assert violations(ROOT) == []


def test_the_rule_fails_on_bad_imports(tmp_path):
    """A synthetic tree with one bad import of each kind the rule forbids, and good ones beside them."""
    files = {
        "trainer/data.py": "from pipeline.engine import curate\nfrom pipeline.contract.tables import clip_id\n",
        "pipeline/engine.py": "def f():\n    from trainer import data  # lazy imports count\n",
        "model/vae.py": "import mfm.cli\nfrom pipeline.contract import codecs\n",
        "benchmark/run.py": "from pipeline import commits\n",
        "pipeline/contract/tables.py": "from pipeline.ops import media\nfrom model.geometry import SIZE_MULTIPLE\n",
        "pipeline/contract/codecs.py": "from . import tables\nfrom ..ops import media\n",
        "pipeline/ops/media.py": "",
        "pipeline/commits.py": "",
        "pipeline/stages/base.py": "",
        "model/geometry.py": "from model import vae\n",
        "mfm/cli.py": "from pipeline.stages import base\n",
        "benchmark/perf/bench.py": "from pipeline.engine import curate\nfrom mfm import cli\n",  # a harness
    }
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in {Path(name).parent for name in files}:
        for folder in (package, *package.parents):
            if str(folder) != "." and not (tmp_path / folder / "__init__.py").exists():
                (tmp_path / folder / "__init__.py").write_text("")
    assert sorted(violations(tmp_path)) == sorted([
        "trainer/data.py:1: trainer -> pipeline.engine",
        "pipeline/engine.py:2: pipeline -> trainer.data",
        "model/geometry.py:1: model.geometry -> model.vae",
        "model/vae.py:1: model -> mfm.cli",
        "pipeline/contract/codecs.py:2: pipeline.contract -> pipeline.ops.media",
        "pipeline/contract/tables.py:1: pipeline.contract -> pipeline.ops.media",
        "benchmark/run.py:1: benchmark -> pipeline.commits",
        "mfm/cli.py:1: mfm -> pipeline.stages.base",
    ])
