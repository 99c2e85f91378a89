"""The monitored days by date, as a person sees them: the Evidently dashboard and the Dagster
summary asset, loaded in a real browser (Debian's headless Chromium, driven by its command line).

Monitoring runs over Jan 8-10 of the monitored world (conftest); then the Evidently UI (and the
Dagster webserver) start on free ports of 127.0.0.1, Chromium renders the page after its
scripts ran (`--dump-dom`), and the test reads the rendered charts: each panel's title, and one
data point per monitored day, in the order of the stored values. The servers stop afterwards.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from mlops_assets import monitoring
from mlops_assets.lib.dashboard import FIGURES_TAG, PANELS
from mlops_assets_tests.conftest import FEATURES_TABLE, make_env, range_tags

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)",
)
DAYS = ("2013-01-08", "2013-01-09", "2013-01-10")
# Headless, offline but for 127.0.0.1: no first-run, sync, update or background requests.
BROWSER = [
    str(CHROMIUM),
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,2400",
]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def monitored(world, tmp_path_factory):
    """Monitoring and the summary over Jan 8-10, in an instance kept on disk (the webserver
    reads it)."""
    root = tmp_path_factory.mktemp("views")
    home = root / "dagster"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        env = make_env(world, root, instance)
        result = dg.materialize(
            [FEATURES_TABLE, *monitoring.monitoring_assets],
            selection=[*monitoring.monitoring_assets],
            resources=env["resources"],
            instance=instance,
            tags=range_tags(DAYS[0], DAYS[-1]),
            run_config={
                "ops": {
                    "drift_report": {
                        "config": {"min_rows": 10, "domain_null_days": 7, "html": "none"}
                    },
                    "performance": {"config": {"min_labelled_records": 1}},
                    "performance_estimate": {"config": {"min_records": 1}},
                }
            },
        )
        assert result.success
        yield env | {"home": home, "result": result}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(command: list[str], ready_url: str, env: dict | None = None, timeout: float = 180):
    """A server process on 127.0.0.1, up once `ready_url` answers; stopped on exit."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        try:
            deadline = time.monotonic() + timeout
            while not answers(ready_url):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    output = log.read().decode()[-3000:]
                    raise AssertionError(f"{command[0]} did not start:\n{output}")
                time.sleep(1)
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


def rendered(url: str, budget_ms: int = 20_000) -> str:
    """The page's DOM after its scripts ran, from headless Chromium (no network but 127.0.0.1)."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [
                *BROWSER,
                f"--user-data-dir={profile}",
                f"--virtual-time-budget={budget_ms}",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def line_points(path: str) -> list[tuple[float, float]]:
    """The data points of a rendered line: its start, then each curve segment's end point."""
    pairs = [tuple(map(float, p.split(","))) for p in re.findall(r"-?[\d.]+,-?[\d.]+", path)]
    commands = re.findall(r"[MLC]", path)
    points, i = [], 0
    for command in commands:
        points.append(pairs[i + (2 if command == "C" else 0)])
        i += 3 if command == "C" else 1
    return points


def panels(dom: str) -> dict[str, dict]:
    """Each dashboard panel's title -> its rendered lines (points) and bar count."""
    found = {}
    for card in re.split(r"<h5[^>]*>", dom)[1:]:
        title = card.split("<", 1)[0]
        lines = re.findall(r'd="(M[^"]*)"[^>]*class="MuiLineElement-root', card)
        found[title] = {
            "lines": [line_points(d) for d in lines],
            "bars": len(re.findall(r"MuiBarElement-root", card)),
        }
    return found


def stored(env, query: str) -> list:
    with duckdb.connect(str(env["dir"] / "warehouse.duckdb"), read_only=True) as con:
        return [row[0] for row in con.execute(query).fetchall()]


def test_the_evidently_dashboard_charts_each_monitored_day(monitored):
    from evidently.ui.workspace import Workspace

    workspace_dir = monitored["dir"] / "evidently"
    workspace = Workspace(str(workspace_dir))
    [project] = workspace.search_project("flights drift")
    figures = [workspace.get_run(project.id, r) for r in workspace.list_runs(project.id)]
    assert sorted(r.timestamp.date().isoformat() for r in figures if FIGURES_TAG in r.tags) == [
        *DAYS
    ]
    # Re-running the summary neither duplicates a panel nor rewrites an unchanged day.
    again = dg.materialize(
        [monitoring.monitoring_summary],
        resources=monitored["resources"],
        instance=monitored["instance"],
    )
    [materialization] = again.asset_materializations_for_node("monitoring_summary")
    assert materialization.metadata["evidently_days_written"].value == 0
    titles = [p.title for p in project.dashboard.model().panels]
    assert sorted(titles) == sorted(p.title for p in PANELS)

    port = free_port()
    command = [
        str(BIN / "evidently"),
        "ui",
        "--workspace",
        str(workspace_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    base = f"http://127.0.0.1:{port}"
    with server(command, f"{base}/api/version"):
        shown = panels(rendered(f"{base}/projects/{project.id}"))
    assert set(shown) >= set(titles)

    # One point per monitored day, in the order of the stored values.
    [share] = shown["Drift share"]["lines"]
    assert len(share) == len(DAYS)
    assert shown["Drifted columns"]["bars"] == len(DAYS)
    statistic, threshold = shown["Drift statistic against its calibrated threshold"]["lines"]
    assert len(statistic) == len(threshold) == len(DAYS)
    assert same_order(statistic, stored(monitored, ORDERED.format("max_z", "drift_report")))
    estimated, low, high, realized = shown["ROC AUC: estimated before labels, realized after"][
        "lines"
    ]
    assert len(estimated) == len(low) == len(high) == len(DAYS)
    expected = stored(monitored, ORDERED.format("estimated_roc_auc", "performance_estimate"))
    assert same_order(estimated, expected)
    assert all(lo[1] >= mid[1] >= hi[1] for lo, mid, hi in zip(low, estimated, high, strict=True))
    # The realized ROC AUC only where one exists: the first 30 flights of Jan 8 and 9 hold no
    # late one, so only Jan 10 has a point, at Jan 10's place on the axis.
    days = stored(monitored, ORDERED.format("roc_auc", "performance"))
    assert [d is not None for d in days] == [False, False, True]
    assert [x for x, _ in realized] == [estimated[-1][0]]


ORDERED = "SELECT {} FROM flights.{} ORDER BY flight_date"


def same_order(points: list[tuple[float, float]], values: list[float]) -> bool:
    """Whether the rendered heights rank the days as the stored values do (SVG y grows down)."""
    heights = [-y for _, y in points]
    days = range(len(values))
    return sorted(days, key=heights.__getitem__) == sorted(days, key=values.__getitem__)


class Page:
    """A page of headless Chromium driven over the DevTools protocol (for what needs a click)."""

    def __init__(self, socket):
        self.socket, self.calls = socket, 0

    def evaluate(self, expression: str):
        self.calls += 1
        params = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        self.socket.send(
            json.dumps({"id": self.calls, "method": "Runtime.evaluate", "params": params})
        )
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.calls:
                return message["result"]["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 120):
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            assert time.monotonic() < deadline, f"the page never showed: {expression}"
            time.sleep(0.5)
        return value


@contextmanager
def page(url: str):
    """`url` open in headless Chromium, driven through its DevTools socket (websockets, a dev
    dependency that the servers' uvicorn already installs)."""
    from websockets.sync.client import connect

    profiles = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
    with profiles as profile, tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [*BROWSER, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its renderer processes end with it (stop_group)
        )
        try:
            # Chromium writes the port it chose into the profile: "<port>\n<browser path>".
            active = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 60
            while not active.exists() or not active.read_text().strip():
                assert process.poll() is None and time.monotonic() < deadline, "no DevTools port"
                time.sleep(0.2)
            port = active.read_text().split()[0]
            new = urllib.request.Request(
                f"http://127.0.0.1:{port}/json/new?{urllib.parse.quote(url, safe='')}",
                method="PUT",
            )
            with urllib.request.urlopen(new, timeout=30) as answer:
                target = json.load(answer)
            with connect(target["webSocketDebuggerUrl"], max_size=None) as socket:
                yield Page(socket)
        finally:
            stop_group(process)


def stop_group(process: subprocess.Popen) -> None:
    """Stop a process started in its own session, and every process it started."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            time.sleep(0.5)  # its children leave after it
            return
        except subprocess.TimeoutExpired:
            continue


def test_the_summary_in_the_dagster_ui_shows_the_plot_and_the_daily_table(monitored):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [
        str(BIN / "dagster-webserver"),
        "-m",
        "mlops_assets.definitions",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    env = {"DAGSTER_HOME": str(monitored["home"]), "MLOPS_DATA_DIR": str(monitored["dir"])}
    with (
        server(command, f"{base}/server_info", env=env),
        page(f"{base}/assets/monitoring_summary?view=events") as shown,
    ):
        # The daily table, rendered as a table: one row per monitored day.
        rows = shown.wait_for(
            "(() => { const rows = [...document.querySelectorAll('tr')]"
            ".map(r => [...r.querySelectorAll('td')].map(c => c.innerText.trim()))"
            ".filter(r => /^2013-01-\\d\\d$/.test(r[0])); return rows.length ? rows : null })()"
        )
        # The plot: behind "[Show Markdown]", an image that decodes (its natural width).
        shown.evaluate(
            "[...document.querySelectorAll('a')].find(a => a.innerText.trim() === "
            "'[Show Markdown]').click()"
        )
        width = shown.wait_for(
            "(() => { const img = document.querySelector('img[src^=\"data:image/png;base64\"]');"
            " return img && img.complete ? img.naturalWidth : null })()"
        )
    assert width == 880  # the summary PNG: 11 inches at 80 dpi
    assert [row[0] for row in rows] == list(DAYS)
    max_z = stored(monitored, ORDERED.format("max_z", "drift_report"))
    assert [float(row[3]) for row in rows] == [round(z, 3) for z in max_z]
