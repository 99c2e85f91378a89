"""Routing records to arms by a keyed hash, and the sample-ratio-mismatch (SRM) check."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd

ARMS = ("control", "treatment", "excluded")
DEFAULT_SHARES: Mapping[str, float] = MappingProxyType(
    {"control": 0.45, "treatment": 0.45, "excluded": 0.10}
)
# An SRM p-value below this means the split is broken (a routing or logging bug), not chance: the
# usual industry threshold (Fabijan et al., KDD 2019), strict because the check runs every day.
SRM_ALPHA = 0.001


def _canonical_column(col: pd.Series) -> list[str]:
    """One column's values as dtype-independent strings (int32 and int64, ns and us agree)."""
    if col.isna().any():
        raise ValueError(f"key column {col.name!r} has missing values; a record needs a full key")
    if isinstance(col.dtype, pd.CategoricalDtype):
        col = col.astype(col.cat.categories.dtype)
    if col.dtype == object and pd.api.types.infer_dtype(col, skipna=False) == "datetime":
        col = pd.to_datetime(col)
    if pd.api.types.is_datetime64_any_dtype(col):
        if col.dt.tz is not None:
            col = col.dt.tz_convert("UTC").dt.tz_localize(None)
        values = col.astype("datetime64[ns]").astype("int64").tolist()
    elif pd.api.types.is_bool_dtype(col):
        values = col.astype(bool).tolist()
    elif pd.api.types.is_float_dtype(col) and bool((col % 1 == 0).all()):
        # A flight number read as float (1545.0) is the same record as the integer 1545.
        values = col.astype("int64").tolist()
    elif pd.api.types.is_numeric_dtype(col):
        values = col.tolist()
    else:
        values = col.astype(str).tolist()
    return [str(v) for v in values]


def validate_shares(shares: Mapping[str, float]) -> dict[str, float]:
    unknown = set(shares) - set(ARMS)
    if unknown:
        raise ValueError(f"unknown arm(s) {sorted(unknown)}; arms are {list(ARMS)}")
    out = {arm: float(shares.get(arm, 0.0)) for arm in ARMS}
    negative = {arm: s for arm, s in out.items() if not s >= 0}
    if negative:
        raise ValueError(f"shares must be non-negative, got {negative}")
    total = sum(out.values())
    if abs(total - 1.0) > 1e-9:
        raise ValueError(f"shares must sum to 1, got {total:.6g} from {dict(shares)}")
    return {arm: s / total for arm, s in out.items()}


def encode_keys(keys: pd.DataFrame) -> list[bytes]:
    """Each row's key values, serialized dtype-independently and length-prefixed (hash input)."""
    if keys.shape[1] == 0:
        raise ValueError("keys must have at least one key column")
    columns = [_canonical_column(keys[c]) for c in keys.columns]
    return [
        "\x1f".join(f"{len(v)}:{v}" for v in row).encode("utf-8")
        for row in zip(*columns, strict=True)
    ]


def arms_of_encoded(
    rows: Sequence[bytes], experiment: str, shares: Mapping[str, float] = DEFAULT_SHARES
) -> np.ndarray:
    """The arm of each encoded key (see `assign_arms`); encoding once lets replays re-salt."""
    if not isinstance(experiment, str) or not experiment:
        raise ValueError("experiment must be a non-empty string (it salts the hash)")
    fractions = validate_shares(shares)
    if not len(rows):
        return np.asarray([], dtype=object)
    salt = hashlib.blake2b(experiment.encode("utf-8"), digest_size=32).digest()
    digests = b"".join(hashlib.blake2b(r, digest_size=8, key=salt).digest() for r in rows)
    u = (np.frombuffer(digests, dtype=">u8") >> np.uint64(11)) * 2.0**-53
    edges = np.cumsum([fractions[arm] for arm in ARMS])[:-1]
    # side="right" never lands a record in a zero-width arm.
    return np.asarray(ARMS, dtype=object)[np.searchsorted(edges, u, side="right")]


def assign_arms(
    keys: pd.DataFrame, experiment: str, shares: Mapping[str, float] = DEFAULT_SHARES
) -> pd.Series:
    """Route each record (row of key columns) to "control", "treatment" or "excluded".

    The arm depends only on the experiment name and the row's key values, in the column order
    given (pass the dataset spec's key columns in the spec's order): each value is serialized
    dtype-independently (timestamps as UTC nanoseconds, integral floats as integers),
    length-prefixed and joined, then hashed with BLAKE2b keyed by a digest of the experiment
    name. The hash is stable across processes and Python versions (unlike the salted built-in
    `hash`), and a new experiment name gives an independent split. The first 53 bits map to a
    uniform u in [0, 1), cut into consecutive intervals of width share in the order control,
    treatment, excluded.
    """
    arms = arms_of_encoded(encode_keys(keys) if len(keys) else [], experiment, shares)
    if not len(keys):
        validate_shares(shares)
    return pd.Series(arms, index=keys.index, name="arm", dtype=object)


@dataclass(frozen=True)
class SampleRatioCheck:
    """Chi-square goodness of fit of the arm counts against the designed shares."""

    counts: tuple[int, int, int]  # control, treatment, excluded
    expected_shares: tuple[float, float, float]
    p_value: float
    alpha: float

    @property
    def passed(self) -> bool:
        return self.p_value >= self.alpha


def sample_ratio_mismatch(
    arms: np.ndarray, shares: Mapping[str, float] = DEFAULT_SHARES, alpha: float = SRM_ALPHA
) -> SampleRatioCheck:
    """SRM check: are the observed arm counts plausible under the designed shares?

    Arms with a zero share must be empty (any record there is a mismatch, p = 0). The hash splits
    records independently, so counts are multinomial and the test is at the record level: a
    failure means routing or logging lost records selectively, which biases every comparison.
    """
    from scipy.stats import chisquare

    fractions = validate_shares(shares)
    arms = np.asarray(arms, dtype=object)
    counts = tuple(int(np.sum(arms == arm)) for arm in ARMS)
    expected_shares = tuple(fractions[arm] for arm in ARMS)
    total = sum(counts)
    if total == 0:
        raise ValueError("no records: the sample ratio cannot be checked")
    live = [i for i, s in enumerate(expected_shares) if s > 0]
    if any(counts[i] for i in range(3) if i not in live):
        p_value = 0.0
    elif len(live) < 2:
        p_value = 1.0
    else:
        observed = [counts[i] for i in live]
        expected = [expected_shares[i] * total for i in live]
        p_value = float(chisquare(observed, expected).pvalue)
    return SampleRatioCheck(counts, expected_shares, p_value, alpha)  # type: ignore[arg-type]
