"""The report says what was decided, when, with which figures; metadata carries the same."""

import dataclasses

import numpy as np

from mlops_assets.lib.ab_testing.decision import decide
from mlops_assets.lib.ab_testing.report import to_markdown, to_metadata
from mlops_assets_tests.lib.ab_testing.test_decision import DESIGN, simulate


def test_report_and_metadata_carry_the_decision_and_the_sequence():
    result = decide(DESIGN, simulate(np.random.default_rng(3), noise_control=0.8))
    meta = to_metadata(result)
    assert meta["decision"] == "promote" == result.decision
    assert meta["decided_on"] == str(result.decided_on)
    assert meta["log_loss_diff_cs_high"] == result.primary.high < -DESIGN.margin
    assert meta["design_alpha"] == 0.05 and meta["design_first_day"] == str(DESIGN.first_day)
    assert all(isinstance(v, (int, float, str)) for v in meta.values())
    text = to_markdown(result)
    assert "## Decision: **promote**" in text
    assert f"| {result.decided_on} **decides** |" in text
    assert text.count(" **decides** |") == 1
    assert len([line for line in text.splitlines() if line.startswith("| 2013-")]) == len(
        result.looks
    )
    assert "Minimum detectable effect: not judged" in text
    with_mde = dataclasses.replace(result, design=dataclasses.replace(DESIGN, mde=0.0123))
    assert "Minimum detectable effect: 0.01230" in to_markdown(with_mde)
