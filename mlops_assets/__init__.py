"""mlops_assets: the lifecycle of a supervised tabular model as a Dagster asset graph.

`dagster ... -m mlops_assets` finds `defs` here. It is built on first access, not on import, so that
importing a submodule (a test of `mlops_assets.lib`, a benchmark) defines nothing else.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "defs":
        from mlops_assets.definitions import defs

        return defs
    raise AttributeError(f"module 'mlops_assets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return [*globals(), "defs"]
