"""`aent ui`: a real MLflow server on loopback over the store aent writes, stopped by Ctrl-C."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from typer.testing import CliRunner

from aent_cli.cli.app import app
from aent_cli.tracking import store


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> tuple:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_ui_serves_the_store_on_loopback_and_stops_on_ctrl_c(tmp_path, mlflow_db):
    uri = f"sqlite:///{mlflow_db}"
    experiment_id = store.client(uri).create_experiment("ui-check")
    port = _free_port()
    log = tmp_path / "ui.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "aent_cli", "ui", "--port", str(port), f"tracking.uri={uri}"],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None and "MLflow UI:" not in log.read_text():
            time.sleep(0.3)
        assert re.search(rf"MLflow UI: http://127\.0\.0\.1:{port}\b", log.read_text()), log.read_text()
        assert _get(f"http://127.0.0.1:{port}/health") == (200, "OK")
        # The server reads the same store: the experiment created above through the client is there.
        status, body = _get(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=ui-check")
        assert status == 200 and json.loads(body)["experiment"]["experiment_id"] == experiment_id
        status, page = _get(f"http://127.0.0.1:{port}/")
        assert status == 200 and "<html" in page.lower()
        # Ctrl-C in a terminal: SIGINT to aent's process group (the server runs in its own session).
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) == 0  # a loaded machine takes its time to stop uvicorn's workers
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "stopped" in log.read_text()
    deadline = time.monotonic() + 30
    while _listening(port) and time.monotonic() < deadline:  # the server's workers close their socket
        time.sleep(0.2)
    assert not _listening(port)  # the server and its workers are gone


def test_ui_refuses_a_busy_port(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["ui", "--port", str(port), f"tracking.uri=sqlite:///{tmp_path}/x.db"])
    assert result.exit_code == 2 and f"port {port} on 127.0.0.1 is in use" in result.output
