"""How the lifecycle command reads a finished run: a refusal by blocking checks vs a breakage."""

import dagster as dg

from mlops_assets.lifecycle import failure_reasons, refused_by_checks


def run(fail_check: bool, fail_step: bool) -> dg.ExecuteInProcessResult:
    @dg.asset(check_specs=[dg.AssetCheckSpec("gate", asset="candidate", blocking=True)])
    def candidate():
        if fail_step:
            raise ValueError("the training data is empty")
        yield dg.Output(1)
        yield dg.AssetCheckResult(
            check_name="gate", passed=not fail_check, description="gate: failed: AUC 0.51"
        )

    @dg.asset(deps=[candidate])
    def downstream():
        return 2

    return dg.materialize([candidate, downstream], raise_on_error=False)


def test_a_failed_blocking_check_is_a_refusal_with_its_verdict():
    result = run(fail_check=True, fail_step=False)
    assert not result.success and refused_by_checks(result)
    assert failure_reasons(result) == ["gate: failed: AUC 0.51"]


def test_an_error_is_not_a_refusal_and_names_the_step():
    result = run(fail_check=False, fail_step=True)
    assert not result.success and not refused_by_checks(result)
    (reason,) = failure_reasons(result)
    assert reason.startswith("candidate: ") and "the training data is empty" in reason


def test_a_successful_run_is_no_refusal():
    result = run(fail_check=False, fail_step=False)
    assert result.success and not refused_by_checks(result) and failure_reasons(result) == []
