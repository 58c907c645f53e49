import json
import sys
import types

import pytest
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from aent_cli.data import Problem, load_jsonl, load_problems, render_prompt
from aent_cli.errors import ConfigError, DataError, UserError

ROW_COUNTS = {
    "benchmarks/math500.jsonl": 500, "benchmarks/aime24.jsonl": 30, "benchmarks/amc23.jsonl": 40,
    "benchmarks/minerva.jsonl": 272, "benchmarks/olympiadbench.jsonl": 675,
    "benchmarks/math_hard.jsonl": 1324, "train/math_train.jsonl": 7498,
}


# ---- the shared data files ----------------------------------------------------------------------

@pytest.mark.parametrize("name,rows", sorted(ROW_COUNTS.items()))
def test_shared_files_load_with_their_row_counts(shared_data, name, rows):
    problems = load_problems(str(shared_data / name))
    assert len(problems) == rows
    assert len({p.id for p in problems}) == rows
    assert all(isinstance(p, Problem) and p.problem.strip() and p.answer.strip() for p in problems)
    raw = [json.loads(line) for line in (shared_data / name).read_text().splitlines()]
    assert [p.id for p in problems] == [r["id"] for r in raw]
    assert [p.answer for p in problems] == [r["answer"] for r in raw]
    assert set(problems[0].meta) == set(raw[0]) - {"id", "problem", "answer"}


def test_relative_and_home_paths(shared_data, tmp_path, monkeypatch):
    monkeypatch.chdir(shared_data)
    assert len(load_problems("benchmarks/aime24.jsonl")) == 30
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "mine.jsonl").write_text('{"problem": "1+1", "answer": "2"}\n')
    assert load_problems("~/mine.jsonl") == [Problem(id="0", problem="1+1", answer="2")]


# ---- malformed files ------------------------------------------------------------------------------

def _write(tmp_path, *lines):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = '{"id": "a", "problem": "1+1", "answer": "2"}'


@pytest.mark.parametrize("lines,message", [
    ((GOOD, '{"id": "b", "problem": "2+2", "answer": "4"'), ":2: invalid JSON ("),
    ((GOOD, "[1, 2]"), ":2: expected a JSON object, got list"),
    ((GOOD, '{"id": "b", "problem": "2+2"}'), ":2: missing field 'answer'"),
    (('{"id": "a", "problem": "  ", "answer": "2"}',), ":1: field 'problem' is empty"),
    (('{"id": "a", "problem": "1+1", "answer": 2}',), ":1: field 'answer' must be a string, got int 2"),
    ((GOOD, "", GOOD), ":3: duplicate id 'a' (first on line 1)"),
    (('{"id": null, "problem": "1+1", "answer": "2"}',), ":1: field 'id' must be a non-empty string"),
])
def test_malformed_rows_name_file_and_line(tmp_path, lines, message):
    path = _write(tmp_path, *lines)
    with pytest.raises(DataError) as err:
        load_jsonl(path)
    assert str(err.value).startswith(f"{path}{message}")


def test_missing_empty_and_binary_files(tmp_path):
    with pytest.raises(DataError) as err:
        load_jsonl(tmp_path / "nope.jsonl")
    assert str(err.value) == f"{tmp_path / 'nope.jsonl'}: no such file"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DataError) as err:
        load_jsonl(empty)
    assert str(err.value) == f"{empty}: empty file, no problems"
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(GOOD.encode() + b'\n{"problem": "\xff", "answer": "1"}\n')
    with pytest.raises(DataError) as err:
        load_jsonl(binary)
    assert str(err.value) == f"{binary}:2: not valid UTF-8"
    assert issubclass(DataError, UserError)


def test_ids_default_to_line_index_and_custom_fields(tmp_path):
    path = _write(tmp_path, '{"question": "q0", "final": "1", "level": 3}', "",
                  '{"question": "q2", "final": " 7 "}')
    problems = load_jsonl(path, problem_field="question", answer_field="final")
    assert [(p.id, p.problem, p.answer) for p in problems] == [("0", "q0", "1"), ("2", "q2", "7")]
    assert problems[0].meta == {"level": 3} and problems[1].meta == {}


# ---- specs -----------------------------------------------------------------------------------------

def test_spec_dispatch_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="arithmetic"):
        load_problems("arithmetic")
    with pytest.raises(DataError, match=r"^data/missing\.jsonl: no such file"):
        load_problems("data/missing.jsonl")
    with pytest.raises(DataError, match="is a directory"):
        load_problems(str(tmp_path))
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(UserError, match="pip install datasets"):
        load_problems("DigitalLearningGmbH/MATH-lighteval")


def test_hub_dataset_rows_are_mapped(monkeypatch):
    calls = []

    def load_dataset(name, split):
        calls.append((name, split))
        if name == "owner/broken":
            raise FileNotFoundError("Dataset 'owner/broken' doesn't exist on the Hub")
        return [  # MATH-lighteval's shape: no answer column, the answer is the solution's last box
            {"problem": "What is $1+1$?", "solution": "Clearly $\\boxed{2}$.", "level": "Level 1", "type": "Algebra"},
            {"problem": "Half?", "solution": "It is $\\boxed{\\frac{1}{2}}$.", "level": "Level 2", "type": "Algebra"},
        ]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    problems = load_problems("DigitalLearningGmbH/MATH-lighteval", split="test")
    assert calls == [("DigitalLearningGmbH/MATH-lighteval", "test")]
    assert [(p.id, p.answer) for p in problems] == [("0", "2"), ("1", "\\frac{1}{2}")]
    assert problems[0].meta["type"] == "Algebra"
    with pytest.raises(DataError, match=r"^owner/broken: cannot load split 'train'"):
        load_problems("owner/broken")


def test_hub_numeric_answers_and_missing_fields(monkeypatch):
    rows = [{"question": "q", "answer": 27.0, "id": 5}, {"question": "r", "answer": 0.5, "id": 6}]
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=lambda n, split: rows))
    problems = load_problems("math-ai/amc23", problem_field="question")
    assert [(p.id, p.answer) for p in problems] == [("5", "27"), ("6", "0.5")]
    with pytest.raises(DataError, match=r"math-ai/amc23\[train\]:row 0: field 'problem'"):
        load_problems("math-ai/amc23")


# ---- prompts ---------------------------------------------------------------------------------------

def _tokenizer(chat_template=None):
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")))
    tok.chat_template = chat_template
    return tok


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def test_prompt_templates():
    problem = "Find $x$ if $\\{x\\} = {problem}$."
    qwen = ("<|im_start|>system\n" + INSTRUCTION + "<|im_end|>\n<|im_start|>user\n" + problem
            + "<|im_end|>\n<|im_start|>assistant\n")
    chat = "<|im_start|>user\n" + problem + "\n" + INSTRUCTION + "<|im_end|>\n<|im_start|>assistant\n"
    assert render_prompt(problem, "qwen_boxed") == qwen
    assert render_prompt(problem, "plain") == problem
    assert render_prompt(problem, "chat", _tokenizer(CHATML)) == chat
    assert render_prompt(problem, "auto", _tokenizer(CHATML)) == chat
    assert render_prompt(problem, "auto", _tokenizer(None)) == qwen
    assert render_prompt(problem, "auto") == qwen


def test_prompt_template_errors():
    with pytest.raises(ConfigError, match=r"model\.prompt_template='alpaca'"):
        render_prompt("1+1", "alpaca")
    with pytest.raises(ConfigError, match=r"model\.prompt_template='chat' needs a tokenizer"):
        render_prompt("1+1", "chat", _tokenizer(None))
