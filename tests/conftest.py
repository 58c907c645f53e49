import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AENT_DATA_DIR", REPO.parent / "shared" / "data"))

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}; set AENT_DATA_DIR")
    return SHARED_DATA
