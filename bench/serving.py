"""Serving under load: `mlflow models serve` of a registered flights model, as the README serves it.

Trains a HistGradientBoosting model on January 2013 (the project's pipeline, wrapped as the
registered `ThresholdedModel`: probability, decision, unknown-category count), registers it in a
temporary MLflow store, starts `mlflow models serve --env-manager local` on 127.0.0.1 with
`--workers` uvicorn workers, then for each number of concurrent clients (threads, each one request
at a time) sends single-record requests for a fixed time, and finally 1,000-record batches.
Prints p50/p99 latency and throughput. Local only: nothing leaves 127.0.0.1.

Run: uv run python bench/serving.py [--workers 2] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
from flights_data import flights_with_weather

from mlops_assets.lib import modeling, registry, served
from mlops_assets.lib.spec import load_spec

SPEC = load_spec()
FEATURES = [*SPEC.categorical_features, *SPEC.numeric_features]
MODEL = "serving_bench"


def register_model(root: Path) -> str:
    """A January model registered in a store under `root`; its tracking URI."""
    import mlflow
    import mlflow.sklearn

    frame = flights_with_weather()
    frame = frame[(frame["month"] == 1) & frame["is_delayed"].notna()]
    pipeline = modeling.build_pipeline(
        "hist_gradient_boosting", {}, SPEC.categorical_features, SPEC.numeric_features, seed=0
    )
    pipeline.fit(frame[FEATURES], frame["is_delayed"].astype(int))
    model = served.ThresholdedModel(
        pipeline,
        0.3,
        categories={c: frame[c].dropna().unique().tolist() for c in SPEC.categorical_features},
    )
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = registry.client(uri)
    experiment = registry.ensure_experiment(client, "serving", str(root / "artifacts"))
    with registry.scoped_tracking(uri), mlflow.start_run(experiment_id=experiment):
        example = frame[FEATURES].head(5)
        example = example.astype({c: "float64" for c in example.select_dtypes("integer")})
        with warnings.catch_warnings():  # the served 0/1 decision is never missing
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
            signature = mlflow.models.infer_signature(example, model.predict(example))
        mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=MODEL,
            signature=signature,
            skops_trusted_types=[
                *modeling.skops_trusted_types("hist_gradient_boosting"),
                *served.TRUSTED_TYPES,
            ],
            pip_requirements=registry.serving_requirements(),
        )
    return uri


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def body(rows) -> str:
    return json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))})


def load(url: str, payload: str, clients: int, seconds: float) -> tuple[list[float], int]:
    """Latencies (s) of every request sent by `clients` threads for `seconds`; failures."""
    deadline = time.perf_counter() + seconds
    headers = {"Content-Type": "application/json"}

    def client() -> tuple[list[float], int]:
        session, latencies, failed = requests.Session(), [], 0
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            response = session.post(url, data=payload, headers=headers, timeout=60)
            latencies.append(time.perf_counter() - began)
            failed += response.status_code != 200
        return latencies, failed

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda _: client(), range(clients)))
    return [t for lat, _ in results for t in lat], sum(f for _, f in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers of the server")
    parser.add_argument("--seconds", type=float, default=10.0, help="load per client count")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        uri = register_model(root)
        port = free_port()
        bin_dir = Path(sys.executable).parent
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        command = [str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}/1"]
        command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
        server = subprocess.Popen(
            [*command, "--workers", str(args.workers)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(240):
                try:
                    if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                time.sleep(0.5)
            else:
                raise SystemExit("the model server did not answer /ping within 120 s")
            frame = flights_with_weather()
            rows = frame.loc[frame["month"] == 2, FEATURES]  # days the model never saw
            one, batch = body(rows.head(1)), body(rows.head(1000))
            load(f"{url}/invocations", one, 1, 1.0)  # warm every worker's model

            print(f"\nserver: mlflow models serve, {args.workers} workers; {args.seconds:g} s each")
            print("| request | clients | requests | p50 ms | p99 ms | records/s | failed |")
            print("|---|---|---|---|---|---|---|")
            for name, payload, records, clients in (
                ("1 record", one, 1, 1),
                ("1 record", one, 1, 8),
                ("1 record", one, 1, 32),
                ("1,000 records", batch, 1000, 1),
                ("1,000 records", batch, 1000, 8),
            ):
                latencies, failed = load(f"{url}/invocations", payload, clients, args.seconds)
                ms = np.percentile(latencies, [50, 99]) * 1000
                rate = len(latencies) * records / args.seconds
                print(
                    f"| {name} | {clients} | {len(latencies)} | {ms[0]:.1f} | {ms[1]:.1f} "
                    f"| {rate:,.0f} | {failed} |"
                )
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
