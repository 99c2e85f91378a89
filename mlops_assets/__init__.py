"""mlops_assets: the lifecycle of a supervised tabular model as a Dagster asset graph."""

from mlops_assets.definitions import defs

__all__ = ["defs"]
