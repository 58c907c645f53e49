import os
import shutil
from pathlib import Path

import pytest
import torch

# resume_run: the finished 3-step run (fixtures template, run) that the resume test modules share
pytest_plugins = ["resume_run"]

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AENT_DATA_DIR", REPO.parent / "shared" / "data"))

# pytest-xdist runs one test process per core: each takes its share of the cores (no oversubscription)
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}; set AENT_DATA_DIR")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_cache() -> Path:
    """The embedded warm-started model, built once (a couple of minutes on first use, then cached
    under AENT_CACHE_DIR or ~/.cache/aent, keyed by its recipe)."""
    from aent_cli.config import compose_config
    from aent_cli.models.loading import resolve_model_path

    return Path(resolve_model_path(compose_config([]).model))


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store with its schema created once per session: a fresh store spends ~2 CPU s
    and 10+ s of wall time (one fsync per migration) in MLflow's schema migrations."""
    from aent_cli.tracking import store

    folder = tmp_path_factory.mktemp("store")
    cwd = os.getcwd()
    os.chdir(folder)  # MLflow's Default experiment keeps its artifacts under ./mlruns of the creating process
    try:
        store.client(f"sqlite:///{folder}/mlflow.db").search_experiments()
    finally:
        os.chdir(cwd)
    return folder / "mlflow.db"


@pytest.fixture
def mlflow_db(tmp_path, empty_store) -> Path:
    """tmp_path/mlflow.db, a copy of `empty_store`: a new store without paying its migrations again."""
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    return tmp_path / "mlflow.db"


@pytest.fixture
def small_run(tmp_path, tiny_cache, mlflow_db):
    """Overrides for a few-second training run on the embedded model, writing into tmp_path."""
    return [
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"trainer.output_dir={tmp_path}/runs",
        "trainer.steps=3", "trainer.batch_size=4", "trainer.mini_batch_size=4", "rollout.n=4",
        "trainer.val_every=0", "data.val_size=16",
    ]


@pytest.fixture(params=["native", "torch"])
def entropy_path(request, monkeypatch):
    """Runs a test on the fused C kernels (entropy_native.py) and on the torch path; a module opts in with
    `pytestmark = pytest.mark.usefixtures("entropy_path")`."""
    from aent_cli.algos import entropy as ent

    monkeypatch.setenv("AENT_NATIVE_ENTROPY", "1" if request.param == "native" else "0")
    if request.param == "native" and ent.entropy_native.kernels() is None:
        pytest.skip("no C compiler: the native kernels are not built here")
    return request.param
