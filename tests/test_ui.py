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
from proc_wait import running, terminal_sigint


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
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=terminal_sigint)
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




def _serving(port: int) -> list:
    """Pids of the processes whose command line serves `port` (mlflow server and its uvicorn)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    args = f.read().split(b"\0")
            except OSError:
                continue
            if b"--port" in args and args[args.index(b"--port") + 1:][:1] == [str(port).encode()] \
                    and any(b"mlflow" in a or b"uvicorn" in a for a in args) and running(int(entry)):
                out.append(int(entry))
    return out


def test_the_server_dies_with_an_aent_ui_killed_by_sigkill(tmp_path):
    """kill -9 leaves `aent ui` no chance to stop the server: its guard (tied to it by the kernel)
    does, and the port is free again (polled with a deadline for a loaded machine)."""
    port = _free_port()
    log = tmp_path / "ui.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "aent_cli", "ui", "--port", str(port),
                                 f"tracking.uri=sqlite:///{tmp_path}/ui.db"],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    pids = []
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None and "MLflow UI:" not in log.read_text():
            time.sleep(0.3)
        assert "MLflow UI:" in log.read_text(), log.read_text()
        pids = _serving(port)
        assert len(pids) >= 2, pids  # mlflow server and its uvicorn
        assert all(os.getpgid(pid) != os.getpgid(proc.pid) for pid in pids)  # not reachable by aent's group
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 60
        while (any(running(pid) for pid in pids) or _listening(port)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(running(pid) for pid in pids) and not _listening(port)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in pids:
            if running(pid):
                os.killpg(os.getpgid(pid), signal.SIGKILL)


def test_the_guard_kills_a_server_group_that_ignores_sigterm(monkeypatch):
    """stop_group: SIGTERM first; a server (and the worker it started) that ignore it are SIGKILLed
    once the guard's timeout passes."""
    from aent_cli.cli import ui_guard

    monkeypatch.setattr(ui_guard, "STOP_TIMEOUT_S", 0.5)
    stubborn = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "w = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
                "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)']); "
                "print(w.pid, flush=True); time.sleep(600)")
    server = subprocess.Popen([sys.executable, "-c", stubborn], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    worker = int(server.stdout.readline())
    try:
        ui_guard.stop_group(server)
        assert server.returncode == -signal.SIGKILL
        deadline = time.monotonic() + 10
        while running(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(worker)
    finally:
        for pid in (server.pid, worker):
            if running(pid):
                os.kill(pid, signal.SIGKILL)
