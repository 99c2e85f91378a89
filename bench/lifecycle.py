"""The whole lifecycle command against a plain-script baseline, side by side in one invocation.

    .venv/bin/python bench/lifecycle.py            # both, full size (about 6-8 minutes)
    .venv/bin/python bench/lifecycle.py --repeats 3   # three pairs, alternated (about 20 minutes)
    .venv/bin/python bench/lifecycle.py --only baseline --quick   # the baseline on a small window

(a) `python -m mlops_assets.lifecycle` in a subprocess, on a fresh temporary DAGSTER_HOME (the
    repository's dagster.yaml copied into it, run with cwd there) and a fresh MLOPS_DATA_DIR, so it
    includes staging the source.
(b) `bench/plain_lifecycle.py` in a subprocess, on its own fresh data directory: the same library
    functions with the same defaults on the same data, without Dagster (its docstring lists what
    it includes and excludes).

They run one after the other (never together: the machine has 2 cores). Prints both wall times,
the ratio (issue 16's target: the lifecycle within 1.2x of the baseline; issue 7's: under 300 s),
each one's peak RSS (GNU time's maximum resident set size of the process; getrusage as a
fallback), the time per stage of each, and the lifecycle's own summary.

On a shared machine one pair's ratio moves by 0.1-0.2 with the load of the minutes it ran in.
`--repeats N` runs N pairs, alternating which side goes first (lifecycle first in odd pairs,
baseline first in even ones), so that a slow stretch falls on both sides; the target is judged
on the median of the pairs' ratios, and the stage table shows each side's median.

MLFLOW_TRACKING_URI and MLOPS_REPLAY_DATE are removed from both environments so that both use
local stores and the real date. Temporary directories are removed unless --keep.
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
GNU_TIME = Path("/usr/bin/time")
LIFECYCLE_TARGET_S = 300
RATIO_TARGET = 1.2
# The lifecycle's stages, in the order it prints "-> ..." lines; plain_lifecycle.py uses the keys.
STAGES = ("data", "train", "monitor", "replay", "retrain", "ab_scoring", "ab_test")
STAGE_TITLES = {
    "imports": "imports and startup",
    "data": "ingest, validate, features (365 days)",
    "train": "train, evaluate, register, promote",
    "monitor": "monitor Jul-Dec (predictions, drift, performance)",
    "replay": "replay the retraining rule",
    "retrain": "retrain a challenger",
    "ab_scoring": "score both models on the A/B days",
    "ab_test": "A/B test and promotion",
}


@dataclass
class Result:
    name: str
    wall: float
    returncode: int
    peak_rss_mb: float | None
    lines: list[tuple[float, str]] = field(default_factory=list)
    stderr_tail: str = ""


def say(message: str) -> None:
    print(message, flush=True)


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()}
    for name in ("MLFLOW_TRACKING_URI", "MLOPS_REPLAY_DATE"):
        env.pop(name, None)
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def run(name: str, command: list[str], env: dict, cwd: Path, scratch: Path) -> Result:
    """Run `command`, streaming its stdout with a prefix and the elapsed time."""
    rss_file = scratch / f"{name}.rss"
    stderr_file = scratch / f"{name}.stderr"
    timed = GNU_TIME.exists()
    if timed:
        command = [str(GNU_TIME), "-f", "%M", "-o", str(rss_file), *command]
    lines = []
    began = time.perf_counter()
    with stderr_file.open("w") as stderr:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
        assert process.stdout is not None
        for line in process.stdout:
            at = time.perf_counter() - began
            line = line.rstrip("\n")
            lines.append((at, line))
            if line.strip() and not line.startswith("STAGE "):
                say(f"  [{name} {at:6.1f} s] {line}")
        returncode = process.wait()
    wall = time.perf_counter() - began
    peak = None
    if timed and rss_file.exists():
        try:
            peak = int(rss_file.read_text().strip().splitlines()[-1]) / 1024
        except (ValueError, IndexError):
            peak = None
    if peak is None:  # the largest child so far: exact only for the first child measured
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    tail = "\n".join(stderr_file.read_text().splitlines()[-30:])
    return Result(name, wall, returncode, peak, lines, tail)


def lifecycle_stages(result: Result) -> dict[str, float]:
    """Seconds per stage from the arrival times of the lifecycle's lines: its "-> title ..." line
    is completed (" done in N s") when the stage ends, so a stage lasts from the previous line's
    arrival to its own; the first from the header line's. In STAGES' order: a lifecycle whose
    challenger was refused stops after "retrain"."""
    header = [at for at, line in result.lines if line.startswith("mlops_assets lifecycle on")]
    ends = [at for at, line in result.lines if line.startswith("-> ")]
    if not header or not ends or len(ends) > len(STAGES):
        return {}
    stages, previous = {"imports": header[0]}, header[0]
    for key, end in zip(STAGES, ends, strict=False):
        stages[key], previous = end - previous, end
    return stages


def baseline_stages(result: Result) -> dict[str, float]:
    stages = {}
    for _, line in result.lines:
        if line.startswith("STAGE "):
            _, key, seconds = line.split()
            stages[key] = float(seconds)
    return stages


def summary_lines(result: Result) -> list[str]:
    lines = [line for _, line in result.lines]
    if "Summary" not in [line.strip() for line in lines]:
        return []
    start = [line.strip() for line in lines].index("Summary")
    return [line for line in lines[start + 1 :] if line.startswith("  ")]


def run_lifecycle(scratch: Path) -> Result:
    home = scratch / "lifecycle"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = clean_env(DAGSTER_HOME=str(home), MLOPS_DATA_DIR=str(home / "data"))
    say(f"== (a) lifecycle: python -m mlops_assets.lifecycle (DAGSTER_HOME={home})")
    return run("lifecycle", [PYTHON, "-m", "mlops_assets.lifecycle"], env, home, scratch)


def run_baseline(scratch: Path, quick: bool) -> Result:
    home = scratch / "baseline"
    home.mkdir()
    command = [PYTHON, str(ROOT / "bench" / "plain_lifecycle.py"), "--data-dir", str(home / "data")]
    if quick:
        command += ["--train-end", "2013-02-28", "--monitor-end", "2013-03-31"]
    say(f"== (b) plain-script baseline: bench/plain_lifecycle.py{' (quick)' if quick else ''}")
    return run("baseline", command, clean_env(MLOPS_DATA_DIR=str(home / "data")), home, scratch)


def report(results: dict[str, Result]) -> None:
    say("\n== Results")
    for result in results.values():
        status = "ok" if result.returncode == 0 else f"FAILED (exit {result.returncode})"
        rss = f"{result.peak_rss_mb:.0f} MB" if result.peak_rss_mb else "n/a"
        say(f"  {result.name:9} wall {result.wall:6.1f} s   peak RSS {rss:>8}   {status}")
        if result.returncode != 0:
            say(f"  last stderr lines of {result.name}:\n{result.stderr_tail}")
    life, base = results.get("lifecycle"), results.get("baseline")
    if life and base and life.returncode == 0 and base.returncode == 0:
        ratio = life.wall / base.wall
        say(
            f"  ratio lifecycle / baseline {ratio:.2f} (target <= {RATIO_TARGET}: "
            f"{'met' if ratio <= RATIO_TARGET else 'NOT met'}); lifecycle "
            f"{life.wall:.0f} s (target < {LIFECYCLE_TARGET_S} s: "
            f"{'met' if life.wall < LIFECYCLE_TARGET_S else 'NOT met'})"
        )
        a, b = lifecycle_stages(life), baseline_stages(base)
        if a and b:
            say(f"\n  {'stage':52} {'lifecycle':>9} {'baseline':>9} {'extra':>7}")
            for key in [k for k in ("imports", *STAGES) if k in a or k in b]:
                extra = a.get(key, 0) - b.get(key, 0)
                say(
                    f"  {STAGE_TITLES[key]:52} {a.get(key, 0):8.1f}s {b.get(key, 0):8.1f}s "
                    f"{extra:+6.1f}s"
                )
    for result in results.values():
        lines = summary_lines(result)
        if lines:
            say(f"\n  {result.name} summary:")
            for line in lines:
                say(f"  {line}")


def report_repeats(pairs: list[dict[str, Result]]) -> None:
    """The pairs side by side, and the medians the targets are judged on."""
    complete = [
        p
        for p in pairs
        if {"lifecycle", "baseline"} <= p.keys() and all(r.returncode == 0 for r in p.values())
    ]
    say(f"\n== {len(pairs)} pairs ({len(complete)} with both sides ok)")
    if not complete:
        return
    say(f"  {'pair':>4} {'first':>9} {'lifecycle':>9} {'baseline':>9} {'ratio':>6}")
    ratios = []
    for number, pair in enumerate(complete, 1):
        life, base = pair["lifecycle"], pair["baseline"]
        ratios.append(life.wall / base.wall)
        say(
            f"  {number:>4} {next(iter(pair)):>9} {life.wall:8.1f}s {base.wall:8.1f}s "
            f"{ratios[-1]:6.2f}"
        )
    ratio = statistics.median(ratios)
    life_wall = statistics.median(p["lifecycle"].wall for p in complete)
    base_wall = statistics.median(p["baseline"].wall for p in complete)
    say(
        f"  median ratio {ratio:.2f} (range {min(ratios):.2f}-{max(ratios):.2f}; target <= "
        f"{RATIO_TARGET}: {'met' if ratio <= RATIO_TARGET else 'NOT met'}); median walls "
        f"{life_wall:.1f} s and {base_wall:.1f} s"
    )
    a = [lifecycle_stages(p["lifecycle"]) for p in complete]
    b = [baseline_stages(p["baseline"]) for p in complete]
    say(f"\n  {'stage (medians)':52} {'lifecycle':>9} {'baseline':>9} {'ratio':>6}")
    for key in ("imports", *STAGES):
        x = [s[key] for s in a if key in s]
        y = [s[key] for s in b if key in s]
        if x and y:
            mx, my = statistics.median(x), statistics.median(y)
            ratio_text = f"{mx / my:6.2f}" if my >= 0.1 else f"{'-':>6}"
            say(f"  {STAGE_TITLES[key]:52} {mx:8.1f}s {my:8.1f}s {ratio_text}")
    # The decisions must not depend on the pair: all but the paths and the time.
    summaries = {
        tuple(
            line
            for line in summary_lines(p["lifecycle"])
            if line.split()[:1] not in (["reports"], ["elapsed"])
        )
        for p in complete
    }
    say(
        "\n  lifecycle summaries: "
        + ("the same in every pair" if len(summaries) == 1 else f"{len(summaries)} different")
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["lifecycle", "baseline"], help="run just one side")
    parser.add_argument(
        "--quick", action="store_true", help="baseline on Jan-Feb (train) + Mar (monitor) only"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    parser.add_argument(
        "--repeats", type=int, default=1, help="pairs to run, alternating which side goes first"
    )
    args = parser.parse_args()
    if args.quick and args.only != "baseline":
        parser.error("--quick applies to the baseline only: use --only baseline --quick")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    scratch = Path(tempfile.mkdtemp(prefix="mlops_bench_lifecycle_"))
    pairs: list[dict[str, Result]] = []
    try:
        for number in range(1, args.repeats + 1):
            sides = [s for s in ("lifecycle", "baseline") if args.only in (None, s)]
            if number % 2 == 0:
                sides.reverse()
            if args.repeats > 1:
                say(f"\n=== pair {number} of {args.repeats}: {' then '.join(sides)}")
            pair_dir = scratch / str(number)
            pair_dir.mkdir()
            results = {}
            for side in sides:
                if side == "lifecycle":
                    results[side] = run_lifecycle(pair_dir)
                else:
                    results[side] = run_baseline(pair_dir, args.quick)
            report(results)
            pairs.append(results)
            if any(r.returncode != 0 for r in results.values()):
                break
        if len(pairs) > 1:
            report_repeats(pairs)
    finally:
        if args.keep:
            say(f"\n  kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    if any(r.returncode != 0 for results in pairs for r in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
