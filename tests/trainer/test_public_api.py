"""The middle layer's public API: what `trainer`, `trainer.data` and `trainer.model` export."""

import ast
import importlib
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import trainer
import trainer.data
import trainer.model

ROOTS = (trainer, trainer.data, trainer.model)
REPO = Path(__file__).resolve().parents[2]


def _all_submodules(package: types.ModuleType) -> None:
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)


@pytest.mark.parametrize("root", ROOTS, ids=lambda m: m.__name__)
def test_every_export_is_the_named_object_even_after_every_submodule_is_imported(root):
    # A public name equal to a submodule's name would turn into that module once it is imported.
    _all_submodules(trainer)
    declared = getattr(root, "_EXPORTS", {})
    for name in root.__all__:
        value = getattr(root, name)
        assert not isinstance(value, types.ModuleType), f"{root.__name__}.{name} is a module"
        if name in declared:
            module, _, attr = declared[name].partition(":")
            assert value is getattr(importlib.import_module(module), attr or name), f"{root.__name__}.{name}"


def test_the_roots_do_not_import_torch():
    code = "import sys, trainer, trainer.data, trainer.data.sources; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"


def test_inference_imports_trainer_only_through_its_roots():
    allowed = {"trainer", "trainer.data", "trainer.model"}
    for path in sorted((REPO / "inference").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "trainer":
                assert node.module in allowed, f"{path.name}:{node.lineno} imports {node.module}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] != "trainer" or alias.name in allowed, f"{path.name}:{node.lineno}"


TOOLS_USING_INTERNALS = {
    # Times the loader's stages one by one (collate's batch builder, preprocess_series, the S2 mask
    # rule), which are not part of the public API on purpose.
    "bench_loader.py",
}


def _trainer_imports(path: Path):
    """(line, module) of every import of a trainer module in `path` (top level or inside functions)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "trainer":
                yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "trainer":
                    yield node.lineno, alias.name


def test_tools_import_trainer_only_through_its_roots():
    allowed = {"trainer", "trainer.data", "trainer.model"}
    paths = sorted(p for p in (REPO / "tools").rglob("*.py") if p.name not in TOOLS_USING_INTERNALS)
    assert len(paths) > 10
    bad = [f"{p.relative_to(REPO)}:{line} imports {module}" for p in paths for line, module in _trainer_imports(p)
           if module not in allowed]
    assert not bad, "\n".join(bad)
