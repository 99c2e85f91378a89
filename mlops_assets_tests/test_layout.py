"""The layout's rules, read from the code: stages meet through the asset graph, importing defines.

Stage modules (one per lifecycle stage) import `lib/`, `resources`, `partitions` and `metadata`,
never each other; `lib/` imports no Dagster and no stage. Only `definitions` (the one Definitions)
and the `lifecycle` command put stages together.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mlops_assets"
SHARED = {"resources", "partitions", "metadata", "lib"}
# The one Definitions, the commands that run beside it (instance preparation, restore), the
# instance's event log storage and the distributed deployment's resources (chosen in definitions).
ASSEMBLY = {
    "definitions",
    "lifecycle",
    "instance",
    "restore",
    "event_log",
    "distributed",
    "__init__",
}


def _stage_files() -> dict[str, list[Path]]:
    """Each stage's source files: a module `<stage>.py`, or a package `<stage>/`."""
    stages = {p.stem: [p] for p in PACKAGE.glob("*.py") if p.stem not in SHARED | ASSEMBLY}
    for folder in PACKAGE.iterdir():
        if (folder / "__init__.py").exists() and folder.name not in SHARED:
            stages[folder.name] = sorted(folder.rglob("*.py"))
    return stages


STAGE_FILES = _stage_files()
STAGES = sorted(STAGE_FILES)


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (function bodies too), as dotted names."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_every_lifecycle_stage_is_found():
    assert {"ingestion", "validation", "features", "training", "evaluation", "monitoring"} <= set(
        STAGES
    )


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_no_other_stage(stage):
    others = {f"mlops_assets.{s}" for s in STAGES if s != stage}
    for path in STAGE_FILES[stage]:
        assert not imported_modules(path) & others, path


@pytest.mark.parametrize(
    "module", sorted(str(p.relative_to(PACKAGE)) for p in (PACKAGE / "lib").rglob("*.py"))
)
def test_lib_imports_no_dagster_and_no_stage(module):
    imported = imported_modules(PACKAGE / module)
    assert not {m for m in imported if m == "dagster" or m.startswith("dagster.")}
    assert not {m for m in imported if m.split(".")[:2] in [["mlops_assets", s] for s in STAGES]}


def test_importing_the_package_and_its_definitions_changes_nothing(tmp_path):
    """No directory created, no environment variable set; `import mlops_assets` builds nothing."""
    check = (
        "import json, os, sys\n"
        "before = dict(os.environ)\n"
        "import mlops_assets\n"
        "built_on_import = 'mlops_assets.definitions' in sys.modules\n"
        "import mlops_assets.definitions\n"
        "changed = sorted(k for k in set(os.environ) | set(before)"
        " if os.environ.get(k) != before.get(k))\n"
        "print(json.dumps({'built_on_import': built_on_import, 'env': changed,"
        " 'has_defs': mlops_assets.defs is mlops_assets.definitions.defs}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {"MLOPS_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(PACKAGE.parent)}
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", check],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "built_on_import": False,
        "env": [],
        "has_defs": True,
    }
    assert list(tmp_path.iterdir()) == []
