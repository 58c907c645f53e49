"""The tracker of ranks other than 0 in a data-parallel run."""
from __future__ import annotations

from typing import Dict, Optional


class SilentTracker:
    """What ranks other than 0 hold in place of the MLflow run: rank 0 alone records."""

    def __init__(self, run_id: Optional[str]) -> None:
        self.run_id = run_id

    def log(self, metrics: Dict[str, float], step: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def set_tags(self, tags: Dict[str, str]) -> None:
        pass

    def end(self, status: str) -> None:
        pass

    def finish(self, result) -> None:
        pass
