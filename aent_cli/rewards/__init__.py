"""Verifiable rewards: final-answer extraction and math-verify checks under a hard time limit."""
from aent_cli.rewards.extract import EVAL_EXTRACTOR, EXTRACTORS, TRAIN_EXTRACTOR, canonical, extract_answer, last_boxed
from aent_cli.rewards.fastpath import quick_verdict
from aent_cli.rewards.grader import GradeBatch, Grader, default_grader, math_reward
from aent_cli.rewards.pool import GraderError

__all__ = ["EVAL_EXTRACTOR", "EXTRACTORS", "GradeBatch", "Grader", "GraderError", "TRAIN_EXTRACTOR", "canonical",
           "default_grader", "extract_answer", "last_boxed", "math_reward", "quick_verdict"]
