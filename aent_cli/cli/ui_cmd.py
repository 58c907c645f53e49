"""`aent ui`: the MLflow UI on the store that train / eval / sweep write (the same URI resolution:
tracking.uri, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db), served on loopback until Ctrl-C.

The printed URL opens the runs table of the configured experiment (tracking.experiment): MLflow 3
otherwise lands on an experiment's GenAI overview, empty for training runs."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import List, Optional

import typer

from aent_cli.cli import ui_guard
from aent_cli.cli.common import fail, load_config, sigterm_interrupts

STARTUP_TIMEOUT_S = 120.0  # the first start may migrate an old store's schema
STOP_TIMEOUT_S = ui_guard.STOP_TIMEOUT_S + ui_guard.LINGER_S + 5.0  # the guard's own bounded shutdown


def server_command(uri: str, host: str, port: int, workers: int) -> List[str]:
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
            "--host", host, "--port", str(port), "--workers", str(workers)]


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def guarded(command: List[str]) -> List[str]:
    """`command` run under ui_guard: it dies with this process, even one killed with SIGKILL."""
    return [sys.executable, "-m", "aent_cli.cli.ui_guard", str(os.getpid()), "--", *command]


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the guard, which stops the server's whole process group (mlflow server forks workers)
    within its own timeouts; SIGKILL it if it lingers past them."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def runs_url(base: str, uri: str, experiment: str) -> str:
    """`<base>/#/experiments/<id>/runs?workflowType=machine_learning` for the experiment when the store has it (and marks it as a
    model-training experiment if an older aent created it); the bare base URL otherwise."""
    from aent_cli.tracking import store

    client = store.client(uri)
    if client.get_experiment_by_name(experiment) is None:
        return base
    # workflowType: the UI's "Model training" side (its own switch otherwise remembers GenAI)
    return f"{base}/#/experiments/{store.experiment_id(client, experiment)}/runs?workflowType=machine_learning"


def ui_command(
    overrides: Optional[List[str]] = typer.Argument(
        None, help="Config overrides; tracking.uri=URI picks the store (default: $MLFLOW_TRACKING_URI, "
                   "else sqlite:///mlflow.db in the working directory, as train / eval / sweep use)."),
    port: int = typer.Option(5000, "--port", "-p", min=1, max=65535, help="Port on 127.0.0.1."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind; keep loopback unless you mean it."),
    workers: int = typer.Option(1, "--workers", min=1, help="Server worker processes."),
) -> None:
    """Start the MLflow UI on the store aent writes to; Ctrl-C stops it."""
    from aent_cli.tracking.store import tracking_uri

    cfg = load_config(overrides)
    uri = tracking_uri(cfg.tracking.uri)
    if uri.startswith(("http://", "https://", "databricks")):
        typer.echo(f"the store is a tracking server already: open {uri}")
        return
    if not port_free(host, port):
        fail(f"port {port} on {host} is in use: pass --port")
    url = f"http://{host}:{port}"
    # Its own session: the terminal's Ctrl-C reaches only us, and we stop the server in order; the
    # guard between us and the server stops it if we die without a chance to (kill -9).
    # MLflow 3's server also starts a job runner with several huey consumers (GenAI jobs): not needed
    # to browse runs, and heavy on a small machine. MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true keeps it.
    env = {**os.environ}
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    proc = subprocess.Popen(guarded(server_command(uri, host, port, workers)), start_new_session=True, env=env)
    try:
        with sigterm_interrupts():  # `kill` stops the server the way Ctrl-C does
            _serve(proc, url, uri, cfg)
    except KeyboardInterrupt:
        stop(proc)
        typer.echo("stopped")
    finally:
        stop(proc)


def _serve(proc, url: str, uri: str, cfg) -> None:
    """Wait for the server to answer, print its URL, then wait for it (Ctrl-C / SIGTERM end the wait)."""
    if not wait_healthy(url, proc, STARTUP_TIMEOUT_S):
        code = proc.poll()
        stop(proc)
        fail(f"the MLflow server did not come up on {url}" + (f" (exit code {code})" if code is not None else ""))
    page = runs_url(url, uri, cfg.tracking.experiment)
    note = "" if page != url else f"; no experiment {cfg.tracking.experiment!r} yet"
    typer.echo(f"MLflow UI: {page}  (store {uri}{note}; Ctrl-C stops it)")
    sys.stdout.flush()
    code = proc.wait()
    fail(f"the MLflow server exited with code {code}")
