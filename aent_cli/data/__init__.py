"""Problems and prompts: JSONL / Hugging Face dataset loading with validation, prompt templates.
(The embedded arithmetic task lives in `arithmetic.py`.)"""
from aent_cli.data.jsonl import load_jsonl
from aent_cli.data.problem import Problem
from aent_cli.data.prompts import TEMPLATES, render_prompt, resolve_template
from aent_cli.data.sources import load_problems

__all__ = ["Problem", "TEMPLATES", "load_jsonl", "load_problems", "render_prompt", "resolve_template"]
