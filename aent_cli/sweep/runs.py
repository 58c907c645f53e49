"""The sweep's parent MLflow run and the bookkeeping that keeps its children honest: a child left
RUNNING by a job that was killed (Ctrl-C, a dead worker) is closed with a terminal status."""
from __future__ import annotations

import json
import secrets
import time
from typing import Dict, List, Mapping, Sequence

from aent_cli.sweep.spec import Job
from aent_cli.tracking import store, tags as tag

UNFINISHED = ("RUNNING", "SCHEDULED")


def sweep_run_name(name: str) -> str:
    return f"sweep-{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def start_parent(client, experiment: str, run_name: str, jobs: Sequence[Job], tags: Mapping[str, str]) -> str:
    """Create the parent run (aent.kind=sweep) with the job list as an artifact; returns its id."""
    exp = store.experiment_id(client, experiment)
    run = client.create_run(exp, run_name=run_name, tags={tag.KIND: tag.KIND_SWEEP, tag.SWEEP_JOBS: str(len(jobs)),
                                                           **{k: str(v)[:5000] for k, v in tags.items()}})
    run_id = run.info.run_id
    store.log_params(client, run_id, {"sweep.n_jobs": str(len(jobs))})
    listing = [{"index": j.index, "label": j.label, "overrides": j.overrides} for j in jobs]
    client.log_text(run_id, json.dumps(listing, indent=2) + "\n", "jobs.json")
    return run_id


def children(client, parent_run_id: str) -> Dict[int, object]:
    """{job index: child run}; with several runs for one index (should not happen) the newest wins."""
    parent = client.get_run(parent_run_id)
    out: Dict[int, object] = {}
    for run in store.search_runs(client, [parent.info.experiment_id], f"tags.`{tag.PARENT_RUN_ID}` = '{parent_run_id}'",
                                 order_by=["attributes.start_time ASC"]):
        index = run.data.tags.get(tag.SWEEP_JOB)
        if index is not None and index.isdigit():
            out[int(index)] = run
    return out


def close_unfinished(client, parent_run_id: str, status: str) -> List[str]:
    """Give every child still RUNNING a terminal status; returns their ids."""
    closed = []
    for run in children(client, parent_run_id).values():
        if run.info.status in UNFINISHED:
            client.set_terminated(run.info.run_id, status=status)
            closed.append(run.info.run_id)
    return closed
