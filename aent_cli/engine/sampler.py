"""Query batches in a seeded, per-epoch shuffled order, with a cursor that checkpoints as JSON.

An epoch's order is drawn once, when the epoch starts (or when a resumed run first needs it), from
(seed, epoch) alone: a resumed run draws the same permutation, and a step costs a slice, not a
shuffle of the whole dataset."""
from __future__ import annotations

import random
from typing import Dict, List, Sequence


class QuerySampler:
    def __init__(self, size: int, batch_size: int, seed: int, shuffle: bool = True) -> None:
        if size < batch_size:
            raise ValueError(f"{size} training problems cannot fill a batch of {batch_size}")
        self.size, self.batch_size, self.seed, self.shuffle = size, batch_size, seed, shuffle
        self.epoch, self.index = 0, 0
        self._drawn: tuple = (-1, [])  # (epoch, its order)

    @property
    def steps_per_epoch(self) -> int:
        return self.size // self.batch_size  # the ragged tail of an epoch is dropped

    def _order(self, epoch: int) -> List[int]:
        if self._drawn[0] != epoch:
            order = list(range(self.size))
            if self.shuffle:
                random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._drawn = (epoch, order)
        return self._drawn[1]

    def next_batch(self) -> List[int]:
        if self.index + self.batch_size > self.size:
            self.epoch, self.index = self.epoch + 1, 0
        batch = self._order(self.epoch)[self.index:self.index + self.batch_size]
        self.index += self.batch_size
        return batch

    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


def take(items: Sequence, indices: Sequence[int]) -> list:
    return [items[i] for i in indices]
