"""The query order: each epoch a seeded permutation drawn once, every problem once per epoch, and a
sampler restored from its JSON state continues exactly where the original would."""
import json
import random

from aent_cli.engine.sampler import QuerySampler


def _reference_order(size: int, seed: int, epoch: int):
    order = list(range(size))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def test_each_epoch_is_one_seeded_permutation_drawn_once(monkeypatch):
    sampler = QuerySampler(size=23, batch_size=5, seed=3)
    shuffles = []
    real = random.Random.shuffle
    monkeypatch.setattr(random.Random, "shuffle", lambda self, x: (shuffles.append(1), real(self, x))[1])
    batches = [sampler.next_batch() for _ in range(3 * sampler.steps_per_epoch)]
    assert len(shuffles) == 3  # once per epoch, not once per step
    for epoch in range(3):
        got = [i for b in batches[epoch * 4:(epoch + 1) * 4] for i in b]
        assert got == _reference_order(23, 3, epoch)[:20]  # the ragged tail (3 problems) is dropped
        assert len(set(got)) == 20


def test_restored_sampler_continues_exactly():
    original = QuerySampler(size=17, batch_size=4, seed=9)
    for _ in range(6):  # into the second epoch
        original.next_batch()
    restored = QuerySampler(size=17, batch_size=4, seed=9)
    restored.load_state_dict(json.loads(json.dumps(original.state_dict())))
    assert [restored.next_batch() for _ in range(7)] == [original.next_batch() for _ in range(7)]


def test_unshuffled_order_is_the_data_order():
    sampler = QuerySampler(size=6, batch_size=3, seed=0, shuffle=False)
    assert [sampler.next_batch() for _ in range(3)] == [[0, 1, 2], [3, 4, 5], [0, 1, 2]]
