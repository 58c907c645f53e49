"""The verifiable math reward: extract each response's final answer and check it against the
reference, batch by batch, with a hard time limit per check.

Cheap work stays in the calling thread: extraction, the fast path (`fastpath.py`: same spelling, or
two plain numbers) and a cache of earlier verdicts. Only pairs that need math-verify go to the worker processes, once per
distinct (answer, reference) pair, since a GRPO group repeats the same few answers many times.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from aent_cli.rewards.extract import TRAIN_EXTRACTOR, check_extractor, extract_answer
from aent_cli.rewards.fastpath import quick_verdict
from aent_cli.rewards.normalize import PERCENT_MODES
from aent_cli.rewards.pool import ERROR, OK, TIMEOUT, VerifierPool

# An "answer" this long is a degenerate response, not a final answer: scored wrong without parsing.
MAX_ANSWER_CHARS = 2000
_CACHE_SIZE = 100_000


@dataclass
class GradeBatch:
    rewards: List[float]
    correct: List[bool]
    extracted: List[Optional[str]]
    timeouts: int = 0  # responses scored 0 because their check ran past the time limit
    errors: int = 0  # responses scored 0 because math-verify failed on them
    verified: int = 0  # math-verify checks actually run (after the fast path and the cache)
    seconds: float = 0.0
    statuses: List[str] = field(default_factory=list)  # per response: ok | timeout | error

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / len(self.correct) if self.correct else 0.0


class Grader:
    """Grades batches of responses; holds worker processes, so close it (or use `with`)."""

    def __init__(self, extractor: str = "auto", correct: float = 1.0, format_reward: float = 0.0,
                 timeout_s: float = 5.0, workers: int = 0, percent: str = "scale"):
        """extractor: strict | auto | last_number (`extract.py`); percent: scale | number
        (`equivalence.py`); timeout_s: the hard limit per distinct answer, seconds."""
        check_extractor(extractor)
        if percent not in PERCENT_MODES:
            raise ValueError(f"unknown percent mode {percent!r}; expected one of {', '.join(PERCENT_MODES)}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.extractor = extractor
        self.percent = percent
        self.correct_reward = correct
        self.format_reward = format_reward
        self.timeout_s = timeout_s
        # workers=0 still uses one helper process: a thread could not be stopped on its deadline.
        self._pool = VerifierPool(max(1, workers), timeout_s, percent)
        self._verdicts: "OrderedDict[Tuple[str, str], Tuple[bool, str]]" = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: Any, default_extractor: str = TRAIN_EXTRACTOR) -> "Grader":
        """From a RewardConfig (dataclass or the composed DictConfig's `reward` node). An unset
        (null) `extractor` takes the command's default: `strict` for training, `auto` for eval."""
        return cls(extractor=cfg.extractor or default_extractor, correct=cfg.correct,
                   format_reward=cfg.format_reward, timeout_s=cfg.timeout_s, workers=cfg.workers,
                   percent=getattr(cfg, "percent", None) or "scale")

    def start(self, wait: bool = False) -> None:
        """Start the grading processes ahead of the first batch (otherwise the first batch with a
        pair for math-verify waits for them to import it, within its time limit). `wait=True`
        returns only once they are ready."""
        self._pool.start(wait)

    def worker_pids(self) -> List[int]:
        return self._pool.pids()

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> "Grader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _remember(self, key: Tuple[str, str], verdict: Tuple[bool, str]) -> None:
        self._verdicts[key] = verdict
        if len(self._verdicts) > _CACHE_SIZE:
            self._verdicts.popitem(last=False)

    def judge(self, extracted: Sequence[Optional[str]], answers: Sequence[str]) -> Tuple[List[bool], List[str], int]:
        """Verdicts for already-extracted answers: (equivalent, status) per item, and checks run."""
        with self._lock:  # the pool and the verdict cache are shared by all calling threads
            verdicts: List[Tuple[bool, str]] = [(False, OK)] * len(extracted)
            todo: Dict[Tuple[str, str], List[int]] = {}
            for i, (pred, ref) in enumerate(zip(extracted, answers)):
                if pred is None or len(pred) > MAX_ANSWER_CHARS:
                    continue
                key = (pred, ref)
                quick = quick_verdict(pred, ref)
                if quick is not None:
                    verdicts[i] = (quick, OK)
                elif key in self._verdicts:
                    verdicts[i] = self._verdicts[key]
                else:
                    todo.setdefault(key, []).append(i)
            keys = list(todo)
            outcomes = self._pool.run(keys)
            for key, outcome in zip(keys, outcomes):
                verdict = (outcome.equivalent and outcome.status == OK, outcome.status)
                if outcome.status != TIMEOUT:  # a timeout may be load, not the input: try again later
                    self._remember(key, verdict)
                for i in todo[key]:
                    verdicts[i] = verdict
            return [v[0] for v in verdicts], [v[1] for v in verdicts], len(keys)

    def grade(self, responses: Sequence[str], answers: Sequence[str]) -> GradeBatch:
        if len(responses) != len(answers):
            raise ValueError(f"{len(responses)} responses but {len(answers)} reference answers")
        start = time.perf_counter()
        extracted = [extract_answer(r, self.extractor) for r in responses]
        correct, statuses, verified = self.judge(extracted, answers)
        rewards = [self.correct_reward * ok + (self.format_reward if e is not None else 0.0)
                   for ok, e in zip(correct, extracted)]
        return GradeBatch(rewards=rewards, correct=correct, extracted=extracted,
                          timeouts=statuses.count(TIMEOUT), errors=statuses.count(ERROR),
                          verified=verified, seconds=time.perf_counter() - start, statuses=statuses)


_default: Optional[Grader] = None
_default_lock = threading.Lock()


def default_grader() -> Grader:
    """A shared grader with the default settings (`auto` extractor, one helper process, 5 s limit),
    made on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Grader()
        return _default


def math_reward(response: str, answer: str) -> float:
    """1.0 if the response's final answer equals `answer`, else 0.0, graded as `aent eval` grades
    by default (`auto` extractor, `scale` percent mode). Returns within the time limit (5 s, plus
    extraction, which is linear in the response) even on a first call whose grading process is
    still starting; a timeout scores 0 (`default_grader().grade` reports it).

    Raises TypeError unless `response` is a str and `answer` a str or a number (a number is graded
    as its str())."""
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(response, str) or not isinstance(answer, str):
        raise TypeError(f"math_reward(response, answer) takes text: got {type(response).__name__}, "
                        f"{type(answer).__name__}")
    return float(default_grader().grade([response], [answer]).correct[0])
