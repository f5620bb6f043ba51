"""Baseline for the exptrack MLflow throughput bench: metrics per second that MLflow's own Python
client (mlflow==3.17.2) pushes into a tracking server with a `log_batch` loop.

Usage: python mlflow_log_batch.py --uri http://127.0.0.1:PORT [--keys 10] [--steps 1000]
       [--batch 1000] [--repeats 5]

Each repeat creates a fresh run (the server slows down as a run grows, so every repeat measures
the same thing), logs keys*steps metric points into it in `log_batch` calls of --batch points, and
is timed with perf_counter (run creation excluded). Prints one JSON
line: {"metrics_per_sec_median": ..., "metrics_per_sec": [...], ...}.
"""

import argparse
import json
import statistics
import time

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--uri", required=True)
    ap.add_argument("--keys", type=int, default=10)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--experiment", default="bench-python")
    a = ap.parse_args()

    client = MlflowClient(tracking_uri=a.uri)
    exp = client.get_experiment_by_name(a.experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(a.experiment)

    rates = []
    ts = int(time.time() * 1000)
    for _ in range(a.repeats):
        run_id = client.create_run(exp_id, run_name="python-log-batch").info.run_id
        points = [
            Metric(key=f"m{k}", value=1.0 / (s + 1 + k), timestamp=ts + s, step=s)
            for s in range(a.steps)
            for k in range(a.keys)
        ]
        t = time.perf_counter()
        for i in range(0, len(points), a.batch):
            client.log_batch(run_id, metrics=points[i : i + a.batch])
        dt = time.perf_counter() - t
        rates.append(len(points) / dt)
        client.set_terminated(run_id)
    print(
        json.dumps(
            {
                "metrics_per_sec_median": statistics.median(rates),
                "metrics_per_sec": rates,
                "points_per_repeat": a.keys * a.steps,
                "batch": a.batch,
            }
        )
    )


if __name__ == "__main__":
    main()
