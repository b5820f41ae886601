#!/usr/bin/env python3
"""Reads back everything in one MLflow experiment with MLflow's own client.

    $SWEEP_MLFLOW_PYTHON scripts/mlflow-readback.py TRACKING_URI EXPERIMENT_NAME [KEY,KEY...]

With a third argument, only those metrics' histories are read (one request per
run and metric: against a server with basic auth, where every request checks
the password, reading them all takes most of a minute).

Run with the python of the environment that scripts/mlflow-up installs
(SWEEP_MLFLOW_PYTHON). Prints one JSON object on stdout:

    {"experiment": {"id", "name", "tags"},
     "runs": [{"run_id", "run_name", "status", "start_time", "end_time",
               "parent_run_id",   # tag mlflow.parentRunId, or null
               "params": {key: value},
               "tags": {key: value},          # all of them, mlflow.* included
               "metrics": {key: latest value},
               "history": {key: [[step, value, timestamp], ...]},  # by step, then time
               "artifacts": [relative file paths, sorted]}, ...],
     "deleted_runs": N}

Active runs only (deleted ones are left out), all of them, oldest first (by
start time, then run id). JSON has no NaN or infinities: such metric values are
written as the strings "NaN", "Infinity" and "-Infinity". (MLflow's SQL store
keeps NaN, but stores an infinity as the largest finite double, +-1.797...e308,
and reads that back.)

Exits 2, with a message on stderr, when the experiment does not exist (or is
deleted); 1 on any other error (a server that does not answer: within about
10 s, not the 4 minutes of MLflow's default retries).
"""
import json
import math
import os
import sys

# MLflow's client retries a refused connection 7 times with exponential
# backoff: about 4 minutes before a test learns that the server is down.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")

from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient


def number(v):
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
    return v


def artifacts(client, run_id, path=None):
    out = []
    for f in client.list_artifacts(run_id, path):
        if f.is_dir:
            out.extend(artifacts(client, run_id, f.path))
        else:
            out.append(f.path)
    return out


def main():
    if len(sys.argv) not in (3, 4):
        print("usage: mlflow-readback.py TRACKING_URI EXPERIMENT_NAME [KEY,KEY...]", file=sys.stderr)
        return 1
    uri, name = sys.argv[1], sys.argv[2]
    only = set(sys.argv[3].split(",")) if len(sys.argv) == 4 else None
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    if exp is None or exp.lifecycle_stage != "active":
        state = "does not exist" if exp is None else "is deleted"
        print(f"mlflow-readback: experiment {name!r} {state} on {uri}", file=sys.stderr)
        return 2

    found, token = [], None
    while True:
        page = client.search_runs(
            [exp.experiment_id],
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            page_token=token,
        )
        found.extend(page)
        token = page.token
        if not token:
            break
    found.sort(key=lambda r: (r.info.start_time or 0, r.info.run_id))

    runs = []
    for r in found:
        rid = r.info.run_id
        history = {}
        for key in sorted(r.data.metrics):
            if only is not None and key not in only:
                continue
            points = client.get_metric_history(rid, key)
            points = sorted(points, key=lambda m: (m.step, m.timestamp))
            history[key] = [[m.step, number(m.value), m.timestamp] for m in points]
        runs.append({
            "run_id": rid,
            "run_name": r.info.run_name,
            "status": r.info.status,
            "start_time": r.info.start_time,
            "end_time": r.info.end_time,
            "parent_run_id": r.data.tags.get("mlflow.parentRunId"),
            "params": dict(sorted(r.data.params.items())),
            "tags": dict(sorted(r.data.tags.items())),
            "metrics": {k: number(v) for k, v in sorted(r.data.metrics.items())},
            "history": history,
            "artifacts": sorted(artifacts(client, rid)),
        })

    out = {
        "experiment": {
            "id": exp.experiment_id,
            "name": exp.name,
            "tags": dict(sorted(exp.tags.items())),
        },
        "runs": runs,
        # runs in MLflow's trash: a second run Sweep created for a trial and
        # then deleted would be here
        "deleted_runs": len(client.search_runs(
            [exp.experiment_id], run_view_type=ViewType.DELETED_ONLY, max_results=1000)),
    }
    json.dump(out, sys.stdout, indent=1, allow_nan=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MlflowException as e:
        print(f"mlflow-readback: {e}", file=sys.stderr)
        sys.exit(1)
