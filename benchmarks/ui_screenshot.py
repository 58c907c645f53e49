"""Open `aent ui`'s printed URL in headless Chromium and check it shows the runs, not an empty page.

    python benchmarks/ui_screenshot.py [--out ui.png]

Builds a throw-away store with one training run (as `aent train` records it), starts `aent ui` on a free
port, loads the printed URL in headless Chromium (Debian: `apt-get install -y chromium`), saves a
screenshot and checks the rendered page lists the run by name. Prints the URL, whether the run is
listed, and the screenshot path; exit code 1 when the run is not on the page, 77 without Chromium.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

RUN_NAME = "aent-ui-screenshot-run"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> Optional[str]:
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_store(folder: Path) -> str:
    """A SQLite store with experiment `aent` holding one finished training run with a few metrics."""
    from aent_cli.tracking import store

    uri = f"sqlite:///{folder}/mlflow.db"
    client = store.client(uri)
    run_id = client.create_run(store.experiment_id(client, "aent"), run_name=RUN_NAME,
                               tags={"aent.kind": "train", "aent.algo": "aent"}).info.run_id
    store.log_params(client, run_id, {"algo.name": "aent", "trainer.steps": "3"})
    for step in range(3):
        store.log_metrics(client, run_id, {"val/acc": 0.3 + 0.1 * step, "actor/entropy": 0.5 - 0.01 * step}, step)
    client.set_terminated(run_id)
    return uri


def browse(url: str, screenshot: Path, timeout_s: float = 180.0) -> str:
    """The DOM after the page's scripts ran (and a screenshot of it at `screenshot`), from one browser
    start: new headless Chromium runs --screenshot and --dump-dom on the same page load."""
    cmd = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--window-size=1400,900", "--virtual-time-budget=30000", "--hide-scrollbars",
           f"--screenshot={screenshot}", "--dump-dom", url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s).stdout


def check_ui(folder: Path, screenshot: Path) -> dict:
    """Start `aent ui` over a fresh store, load its printed URL, stop it; returns what was seen."""
    uri = make_store(folder)
    port = _free_port()
    log = folder / "ui.log"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "aent_cli", "ui", "--port", str(port), f"tracking.uri={uri}"],
                                cwd=folder, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None and "MLflow UI:" not in log.read_text():
            time.sleep(0.5)
        match = re.search(r"MLflow UI: (\S+)", log.read_text())
        if not match:
            raise RuntimeError(f"aent ui printed no URL:\n{log.read_text()}")
        url = match.group(1)
        dom = browse(url, screenshot)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    return {"url": url, "run_listed": RUN_NAME in dom, "no_data": "No data" in dom, "dom_chars": len(dom),
            "screenshot": screenshot if screenshot.is_file() else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("ui_runs_page.png"), help="screenshot path")
    args = parser.parse_args()
    if chromium() is None:
        print("no chromium on PATH (Debian: apt-get install -y chromium)")
        return 77
    with tempfile.TemporaryDirectory(prefix="aent-ui-shot-") as tmp:
        seen = check_ui(Path(tmp), args.out.resolve())
    for key, value in seen.items():
        print(f"{key}: {value}")
    return 0 if seen["run_listed"] else 1


if __name__ == "__main__":
    sys.exit(main())
