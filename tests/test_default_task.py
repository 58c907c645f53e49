"""The embedded default's task generator (two-digit sums, a direct and a worked answer path) and its
BPE tokenizer trained on the task's own text."""
import re

import pytest

from aent_cli.data.arithmetic import (TEST_SIZE, arithmetic_problems, carries, direct_response, lexicon, operands,
                                      worked_response)
from aent_cli.data.arithmetic import test_problems as held_out_problems
from aent_cli.rewards import math_reward


def test_problems_are_two_digit_sums_with_their_answers():
    problems = arithmetic_problems(500, 3, "train")
    for p in problems:
        word, sum_text = p.problem.split(" ")
        assert word in lexicon() and re.fullmatch(r"\d\d\+\d\d=", sum_text)
        a, b = operands(p.problem)
        assert 10 <= a <= 99 and 10 <= b <= 99 and p.answer == str(a + b)
    assert arithmetic_problems(50, 3, "train") == problems[:50]  # deterministic by seed
    assert arithmetic_problems(50, 4, "train") != problems[:50]
    share = sum(carries(*operands(p.problem)) for p in problems) / len(problems)
    assert 0.38 < share < 0.52  # uniform operands: 45% carry


def test_hard_share_sets_the_share_of_carrying_sums():
    assert not any(carries(*operands(p.problem)) for p in arithmetic_problems(200, 0, "train", hard_share=0.0))
    assert all(carries(*operands(p.problem)) for p in arithmetic_problems(200, 0, "train", hard_share=1.0))
    mixed = arithmetic_problems(1000, 0, "train", hard_share=0.7)
    assert 0.65 < sum(carries(*operands(p.problem)) for p in mixed) / 1000 < 0.75


def test_test_split_is_fixed_unique_and_never_drawn_for_training():
    test = held_out_problems()
    assert len(test) == TEST_SIZE and len({p.problem for p in test}) == TEST_SIZE
    held_out = {p.problem for p in test}
    for split in ("train", "warmstart"):
        assert not held_out & {p.problem for p in arithmetic_problems(3000, 1, split)}
    with pytest.raises(ValueError, match="512"):
        arithmetic_problems(TEST_SIZE + 1, 0, "test")


def test_direct_path_is_right_exactly_without_a_carry_and_the_worked_path_always():
    assert direct_response("ka 47+35=") == "\\boxed{72}"  # the carry forgotten
    assert worked_response("ka 47+35=") == "7+5=12, 4+3+1=8, \\boxed{82}"
    assert worked_response("ka 91+98=") == "1+8=9, 9+9+0=18, \\boxed{189}"
    for p in held_out_problems():
        a, b = operands(p.problem)
        assert math_reward(direct_response(p.problem), p.answer) == (0.0 if carries(a, b) else 1.0)
        assert math_reward(worked_response(p.problem), p.answer) == 1.0
        # every step of the worked answer is true arithmetic
        for lhs, rhs in re.findall(r"([\d+]+)=(\d+),", worked_response(p.problem)):
            assert sum(int(x) for x in lhs.split("+")) == int(rhs)


def test_lexicon_is_fixed_and_distinct():
    words = lexicon()
    assert len(words) == len(set(words)) == 1500 and all(w.isalpha() and w.islower() for w in words)


@pytest.fixture(scope="module")
def tokenizer():
    from aent_cli.models.tiny import build_tokenizer

    return build_tokenizer()


def test_tokenizer_is_bpe_on_the_task_text_with_single_digit_tokens(tokenizer):
    from aent_cli.models.tiny import VOCAB_SIZE, build_tokenizer

    assert len(tokenizer) == VOCAB_SIZE == 2048
    assert tokenizer.pad_token == "<pad>" and tokenizer.eos_token == "<eos>" and tokenizer.padding_side == "left"
    texts = []
    for p in held_out_problems()[:50]:
        texts += [p.problem, direct_response(p.problem), worked_response(p.problem)]
    texts += ["12+34= 56+7*8=", "  spaces\nand UPPER ü €", "\\boxed{-3.5}"]
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text
        digits = [t for t in tokenizer.convert_ids_to_tokens(ids) if any(ch.isdigit() for ch in t)]
        assert all(len(t) == 1 for t in digits), digits  # one digit per token: arithmetic stays digit-wise
    # the task's words are learned as few tokens, far fewer than their characters
    words = " ".join(lexicon()[:200])
    assert len(tokenizer.encode(words, add_special_tokens=False)) < 0.45 * len(words)
    # the two answer paths start with different tokens: the first token is the path choice
    p = held_out_problems()[0].problem
    assert (tokenizer.encode(direct_response(p), add_special_tokens=False)[0]
            != tokenizer.encode(worked_response(p), add_special_tokens=False)[0])
    assert build_tokenizer().get_vocab() == tokenizer.get_vocab()  # deterministic: the cache key holds
