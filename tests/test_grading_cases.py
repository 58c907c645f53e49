"""Answer grading, case by case. Every case is labelled by the mathematics (is the response's final
answer the reference's value?), never by what a grader happens to return.

The first tables are the kinds of issue 14; then cases of the kinds public graders test (intervals,
sets, tuples, degrees, \\dfrac, scientific notation, complex numbers, equations, thousands
separators, trailing periods, \\text{}, \\mathrm{}, LaTeX spacing).
"""
import pytest

from aent_cli.eval.scores import majority_correct, majority_index, normalize_answer
from aent_cli.rewards import Grader

RIGHT, WRONG = True, False


@pytest.fixture(scope="module")
def graders():
    with Grader(extractor="auto", timeout_s=20.0, workers=2) as auto, \
            Grader(extractor="strict", timeout_s=20.0, workers=1) as strict, \
            Grader(extractor="auto", timeout_s=20.0, workers=1, percent="number") as number:
        for g in (auto, strict, number):
            g.start(wait=True)
        yield {"auto": auto, "strict": strict, "number": number}


def _grade(grader, cases):
    batch = grader.grade([c[0] for c in cases], [c[1] for c in cases])
    assert batch.timeouts == 0 and batch.errors == 0, batch.statuses
    return batch


def _check(grader, cases):
    batch = _grade(grader, cases)
    wrong = [(c, e) for c, ok, e in zip(cases, batch.correct, batch.extracted) if ok != c[2]]
    assert wrong == [], wrong


# Kind 1: no \boxed{}, the final answer written otherwise.
UNBOXED = [
    ("The answer is $\\frac{3}{4}$.", "3/4", RIGHT),
    ("Final Answer: the largest n is 17", "17", RIGHT),
    ("Adding the two parts gives\n\\[ 42 \\]", "42", RIGHT),
    ("We solve 2x = 10. So x = 5.", "5", RIGHT),
    ("**Final Answer**\n\n$$\\frac{1}{2}$$", "0.5", RIGHT),
    ("Thus the answer is 12.", "12", RIGHT),
    ("Answer: $-3$", "-3", RIGHT),
    ("The answer is $\\frac{3}{4}$.", "4/3", WRONG),
    ("Final Answer: the largest n is 17", "18", WRONG),
    # a hedge outside boxes is no answer, whichever candidate is right
    ("The answer is 3 or 5.", "3", WRONG),
    ("It could be $3$ or $5$.", "5", WRONG),
    ("x = 2 or x = 7", "7", WRONG),
]
# Kind 2: several boxes that together are the answer (a solution list's order does not matter).
BOX_LISTS = [
    ("The solutions are \\boxed{(1, 4)} and \\boxed{(4, 1)}.", "(1,4),(4,1)", RIGHT),
    ("$\\boxed{(4, 1)}$ and $\\boxed{(1, 4)}$", "(1,4),(4,1)", RIGHT),
    ("\\boxed{2}, \\boxed{7}", "2, 7", RIGHT),
    ("\\boxed{7}, \\boxed{2}", "2, 7", RIGHT),
    ("\\boxed{2}, \\boxed{8}", "2, 7", WRONG),
    # an intermediate box far from the final one is not part of the answer
    ("First \\boxed{3} is the width. Then, computing the area over several steps, \\boxed{12}", "12", RIGHT),
]
# Kind 3: words and units around a value.
UNITS = [
    ("\\boxed{15 percent}", "15\\%", RIGHT),
    ("\\boxed{12 \\text{ cm}^2}", "12", RIGHT),
    ("36 square meters", "36", RIGHT),
    ("\\boxed{\\$4.50}", "4.5", RIGHT),
    ("\\boxed{36 square meters}", "37", WRONG),
]
# Kind 4: relations and matrices written differently.
RELATIONS = [
    ("\\boxed{x \\geq 3}", "x >= 3", RIGHT),
    ("\\boxed{y \\neq 0}", "y != 0", RIGHT),
    ("\\boxed{\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", RIGHT),
    ("\\boxed{[-1, 4]}", "-1 \\le x \\le 4", RIGHT),
    ("\\boxed{x \\leq 3}", "x >= 3", WRONG),
    ("\\boxed{\\begin{bmatrix}1&2\\\\4&3\\end{bmatrix}}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", WRONG),
]
# Kind 5: markdown around a bare answer.
MARKDOWN = [("**58**", "58", RIGHT), ("**58**", "85", WRONG)]
# Kind 6: rewrites must not change the value.
VALUE_CHANGES = [
    ("\\boxed{4 5}", "45", WRONG),
    ("\\boxed{6 \\quad 1}", "61", WRONG),
    ("\\boxed{45}", "4 5", WRONG),
]
# Kind 7: a percentage and the same quantity as a fraction (Qwen2.5-Math's grader accepts them).
PERCENT = [
    ("\\boxed{0.25}", "25\\%", RIGHT),
    ("\\boxed{40\\%}", "0.4", RIGHT),
    ("\\boxed{50\\%}", "\\frac{1}{2}", RIGHT),
    ("\\boxed{10}", "10\\%", RIGHT),
    ("\\boxed{0.3}", "25\\%", WRONG),
]

KINDS = UNBOXED + BOX_LISTS + UNITS + RELATIONS + MARKDOWN + VALUE_CHANGES + PERCENT


def test_issue_kinds_in_auto_mode(graders):
    _check(graders["auto"], KINDS)


@pytest.mark.parametrize("table", [UNBOXED, UNITS[2:3], MARKDOWN])
def test_strict_mode_rewards_no_unboxed_answer(graders, table):
    """`strict` (the training default) requires the box: kinds 1, 3 and 5 without one earn nothing."""
    batch = _grade(graders["strict"], table)
    assert batch.correct == [False] * len(table) and batch.extracted == [None] * len(table)


def test_strict_mode_takes_the_last_box_only(graders):
    batch = _grade(graders["strict"], BOX_LISTS[:4])
    assert batch.extracted == ["(4, 1)", "(1, 4)", "7", "2"] and not any(batch.correct)


def test_strict_mode_grades_a_boxed_answer_like_auto(graders):
    boxed = [c for c in UNITS + RELATIONS + VALUE_CHANGES + PERCENT if "\\boxed" in c[0]]
    _check(graders["strict"], boxed)


def test_percent_number_mode(graders):
    """percent=number: a percentage equals its number (10% == 10), not its fraction."""
    cases = [("\\boxed{0.25}", "25\\%", WRONG), ("\\boxed{40\\%}", "0.4", WRONG),
             ("\\boxed{10}", "10\\%", RIGHT), ("\\boxed{25\\%}", "25\\%", RIGHT)]
    _check(graders["number"], cases)


# Cases of the kinds public graders test, each labelled by its mathematics.
PUBLIC_KINDS = [
    # intervals
    ("\\boxed{(-\\infty, 3]}", "x \\le 3", RIGHT),
    ("\\boxed{[2, 5)}", "[2,5)", RIGHT),
    ("\\boxed{(2, 5]}", "[2, 5]", WRONG),
    ("\\boxed{(-\\infty, -1) \\cup (1, \\infty)}", "(-\\infty,-1)\\cup(1,\\infty)", RIGHT),
    ("\\boxed{[0, \\infty)}", "x \\ge 0", RIGHT),
    ("\\boxed{x \\in [1, 3]}", "[1,3]", RIGHT),
    # sets and tuples
    ("\\boxed{\\{3, 1, 2\\}}", "\\{1,2,3\\}", RIGHT),
    ("\\boxed{\\{1, 2\\}}", "\\{1,2,3\\}", WRONG),
    ("\\boxed{(3, -2)}", "(3,-2)", RIGHT),
    ("\\boxed{(-2, 3)}", "(3,-2)", WRONG),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "(3, \\frac{\\pi}{2})", RIGHT),
    # degrees
    ("\\boxed{30^\\circ}", "30", RIGHT),
    ("\\boxed{45^{\\circ}}", "45^\\circ", RIGHT),
    ("\\boxed{60}", "30^\\circ", WRONG),
    # \dfrac, \tfrac
    ("\\boxed{\\dfrac{7}{3}}", "\\frac{7}{3}", RIGHT),
    ("\\boxed{\\tfrac{1}{3}}", "1/3", RIGHT),
    ("\\boxed{\\dfrac{3}{7}}", "\\frac{7}{3}", WRONG),
    # scientific notation
    ("\\boxed{3 \\times 10^{8}}", "3e8", RIGHT),
    ("\\boxed{1.5 \\times 10^{-3}}", "0.0015", RIGHT),
    ("\\boxed{1.5 \\times 10^{3}}", "0.0015", WRONG),
    ("\\boxed{2.7778e-6}", "2.7778 \\times 10^{-6}", RIGHT),
    ("\\boxed{4.5 \\times 10^{33}}", "4.5e33", RIGHT),
    # complex numbers
    ("\\boxed{3 - 4i}", "3-4i", RIGHT),
    ("\\boxed{-4i + 3}", "3 - 4i", RIGHT),
    ("\\boxed{3 + 4i}", "3-4i", WRONG),
    # equations against their value
    ("\\boxed{y = 2x + 1}", "2x + 1", RIGHT),
    ("\\boxed{y = 2x - 1}", "2x + 1", WRONG),
    ("\\boxed{x = 4}", "4", RIGHT),
    # thousands separators
    ("\\boxed{1,000,000}", "1000000", RIGHT),
    ("\\boxed{12{,}345}", "12345", RIGHT),
    ("\\boxed{1 234 567}", "1234567", RIGHT),
    ("\\boxed{10\\!000}", "10000", RIGHT),
    ("\\boxed{1,001}", "1000", WRONG),
    # trailing periods
    ("\\boxed{7.}", "7", RIGHT),
    ("The answer is 12.", "12", RIGHT),
    ("\\boxed{7.5}", "7", WRONG),
    # \text{} and \mathrm{}
    ("\\boxed{\\text{(B)}}", "B", RIGHT),
    ("\\boxed{5 \\text{ apples}}", "5", RIGHT),
    ("\\boxed{\\text{(D)}}", "B", WRONG),
    ("\\boxed{9 \\mathrm{m}}", "9", RIGHT),
    ("\\boxed{\\mathrm{(C)}}", "C", RIGHT),
    # LaTeX spacing and sizing commands
    ("\\boxed{2\\,\\sqrt{3}}", "2\\sqrt{3}", RIGHT),
    ("\\boxed{\\frac{1}{2}\\;\\pi}", "\\frac{\\pi}{2}", RIGHT),
    ("\\boxed{\\left[ 1, 2 \\right]}", "[1,2]", RIGHT),
    # equal values in other forms
    ("\\boxed{\\sqrt{12}}", "2\\sqrt{3}", RIGHT),
    ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}", RIGHT),
    ("\\boxed{-\\infty}", "\\infty", WRONG),
    ("\\boxed{-0}", "0", RIGHT),
    ("\\boxed{0.5}", "0.50", RIGHT),
    ("\\boxed{98765432109876543210}", "98765432109876543211", WRONG),
]


def test_public_grader_kinds(graders):
    assert len(PUBLIC_KINDS) >= 40
    _check(graders["auto"], PUBLIC_KINDS)


# Kind 8: maj@k keys. Different values never share a key (integers and long decimals stay exact);
# spellings of one value do.
@pytest.mark.parametrize("a,b", [
    ("98765432109876543210", "98765432109876543211"),
    ("0.1234567890123456789", "0.1234567890123456788"),
    ("4 5", "45"),
    ("1e5", "100001"),
    ("9" * 5000, "9" * 4999 + "8"),  # past int()'s 4,300-digit limit
])
def test_majority_keys_keep_different_values_apart(a, b):
    assert normalize_answer(a) != normalize_answer(b)


@pytest.mark.parametrize("a,b", [
    ("98765432109876543210", "098765432109876543210"), ("2.50", "2.5"), ("1e5", "100000"),
    ("-0", "0"), ("1 000", "1000"), ("+7", "7"),
])
def test_majority_keys_join_spellings_of_one_value(a, b):
    assert normalize_answer(a) == normalize_answer(b)


def test_a_wrong_large_integer_cannot_decide_maj_at_k():
    extracted = ["98765432109876543211", "98765432109876543210", "98765432109876543210"]
    assert majority_index(extracted) == 1
    assert majority_correct(extracted, [False, True, True])
