"""`aent eval` end to end: check every input, then per model load it once, run every benchmark,
record the MLflow run, and print / write the tables.

All user errors (unknown benchmark, missing file, malformed data, bad model reference, unknown run id)
surface in `plan_eval`, before any model is loaded.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from omegaconf import DictConfig, OmegaConf

from aent_cli.data.problem import Problem
from aent_cli.data.prompts import render_prompt, resolve_template
from aent_cli.eval.benchmarks import BenchSource, benchmark_names, load_benchmark, resolve_source
from aent_cli.eval.progress import EvalProgress
from aent_cli.eval.recording import EvalRecorder, comparison_table, summary_table
from aent_cli.eval.runner import BenchResult, evaluate_problems
from aent_cli.eval.targets import ModelRefError, ModelTarget, check_hub_model, looks_like_hub_id, resolve_model
from aent_cli.rewards import EVAL_EXTRACTOR, Grader
from aent_cli.rollout import build_rollout
from aent_cli.rollout.base import SamplingParams
from aent_cli.tracking import store, tables, tags as tag


@dataclass
class EvalPlan:
    sources: List[BenchSource]
    problems: Dict[str, List[Problem]]
    targets: List[ModelTarget]


@dataclass
class ModelEval:
    target: ModelTarget
    run_id: str
    results: Dict[str, BenchResult] = field(default_factory=dict)


def plan_eval(cfg: DictConfig) -> EvalPlan:
    e = cfg.eval
    sources = [resolve_source(name, source, e.data_dir, dict(e.sources))
               for name, source in benchmark_names(list(e.benchmarks))]
    problems = {s.bench.name: load_benchmark(s, e.limit) for s in sources}
    refs = list(e.models) or [cfg.model.path]

    def existing_store():
        """The store a run id is looked up in; opening a missing SQLite file would create and migrate an
        empty one (10+ s) only to find no run in it."""
        if not store.store_exists(cfg.tracking.uri):
            raise ModelRefError(f"no MLflow store at {store.tracking_uri(cfg.tracking.uri)}: a run id is looked up "
                                "in tracking.uri's store (set tracking.uri=... to the store of the run)")
        return store.client(cfg.tracking.uri)

    targets = [t for ref in refs for t in resolve_model(ref, e.checkpoint, existing_store)]
    for path in dict.fromkeys(t.path for t in targets if looks_like_hub_id(t.path)):
        check_hub_model(path)  # seconds, not minutes of download retries, for a hub id that cannot load
    from aent_cli.models.loading import check_weight_files

    for path in dict.fromkeys(t.path for t in targets if Path(t.path).is_dir()):
        check_weight_files(path, "--model")  # a truncated file: one line, before any model runs
    return EvalPlan(sources, problems, targets)


def sampling_params(cfg: DictConfig) -> SamplingParams:
    e = cfg.eval
    return SamplingParams(n=e.k, temperature=e.temperature, top_p=e.top_p, top_k=e.top_k,
                          max_new_tokens=e.max_new_tokens, seed=e.seed)


def target_config(cfg: DictConfig, target: ModelTarget) -> DictConfig:
    """The config this target is evaluated (and recorded) with: model.path = the target, and a
    training run's own prompt template (its config value; `auto` resolves against its tokenizer as in
    training), so that a run evaluated by id or folder sees the prompts it was trained on even though
    `--model <run>` keeps the default model group (whose template, `plain`, is the tiny model's)."""
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    out.model.path = target.path
    out.model.gradient_checkpointing = False  # it turns off the KV cache: generation would crawl
    if target.prompt_template:
        out.model.prompt_template = target.prompt_template
    return out


def prompt_template(cfg: DictConfig, source: BenchSource) -> str:
    return source.bench.template if source.bench.template != "auto" else cfg.model.prompt_template


def load_target(cfg: DictConfig):
    """(model, tokenizer) for a target's config (`target_config`), on `trainer.threads` torch CPU threads."""
    from aent_cli.models.loading import load_policy, resolve_device  # torch: after the plan's checks

    if cfg.trainer.threads:  # torch CPU threads, as for `aent train`
        import torch

        torch.set_num_threads(cfg.trainer.threads)
    return load_policy(cfg.model, resolve_device(cfg.trainer.device))


def evaluate_target(cfg: DictConfig, plan: EvalPlan, target: ModelTarget, recorder: EvalRecorder,
                    progress: Optional[EvalProgress] = None, loaded=None) -> Dict[str, BenchResult]:
    """Every benchmark on one target; `loaded` is its (model, tokenizer) when already loaded."""
    progress = progress or EvalProgress(None)
    model, tokenizer = loaded or load_target(cfg)
    backend = build_rollout(cfg.rollout, model, tokenizer)
    results: Dict[str, BenchResult] = {}
    try:
        with Grader.from_config(cfg.reward, default_extractor=EVAL_EXTRACTOR) as grader:
            grader.start()  # its processes import math-verify while the first batch generates
            for source in plan.sources:
                name = source.bench.name
                problems = plan.problems[name]
                template = resolve_template(prompt_template(cfg, source), tokenizer)
                recorder.set_tags({tag.PROMPT_TEMPLATE_PREFIX + name: template})
                prompts = [render_prompt(p.problem, template, tokenizer) for p in problems]
                with progress.bench(f"{target.label} · {name}", len(problems), cfg.eval.k, cfg.eval.max_new_tokens,
                                    cfg.eval.batch_size) as counter:
                    if hasattr(backend, "on_tokens"):  # tokens of every decoding step, for the live rate
                        backend.on_tokens = counter.tokens
                    results[name] = evaluate_problems(backend, problems, prompts, sampling_params(cfg), grader,
                                                      batch_size=cfg.eval.batch_size, on_progress=counter.problems_done)
                recorder.log_bench(name, results[name])
    finally:
        backend.close()
    return results


def run_eval(cfg: DictConfig, console=None, progress_console=None) -> List[ModelEval]:
    """Evaluate every target on every benchmark; returns the results with their MLflow run ids."""
    plan = plan_eval(cfg)
    client = store.client(cfg.tracking.uri, cfg.tracking.artifact_location)
    done: List[ModelEval] = []
    for target in plan.targets:
        tcfg = target_config(cfg, target)
        params = {**store.flatten(tcfg), "eval.model_ref": target.ref}
        loaded = load_target(tcfg)  # before the MLflow run: a model that cannot load leaves no FAILED run
        recorder = EvalRecorder(client, cfg.tracking.experiment, target, params)
        entry = ModelEval(target, recorder.run_id)
        status = "FAILED"
        try:
            with EvalProgress(progress_console) as progress:
                entry.results = evaluate_target(tcfg, plan, target, recorder, progress, loaded)
            status = "FINISHED"
        finally:
            loaded = None  # free this model before the next one loads
            recorder.finish(entry.results, status)
        done.append(entry)
        if console is not None:
            console.print(tables.to_rich(summary_table(entry.results),
                                         title=f"{target.label}  (MLflow run {recorder.run_id})"))
    write_summary(cfg, done, console)
    return done


def write_summary(cfg: DictConfig, done: List[ModelEval], console=None) -> Optional[Path]:
    """Table 1 shape over the evaluated models, printed and written to <eval.output_dir>/eval-<time>/."""
    if not done:
        return None
    labels = [m.target.label if [d.target.label for d in done].count(m.target.label) == 1
              else f"{m.target.label} ({m.run_id[:8]})" for m in done]
    table = comparison_table({label: m.results for label, m in zip(labels, done)},
                             run_ids={label: m.run_id for label, m in zip(labels, done)})
    folder = Path(cfg.eval.output_dir) / f"eval-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.md").write_text(tables.to_markdown(table, f"avg@{cfg.eval.k} per benchmark"), encoding="utf-8")
    (folder / "summary.csv").write_text(tables.to_csv(table), encoding="utf-8")
    if console is not None:
        k = cfg.eval.k
        console.print(tables.to_rich(table, title=f"avg@{k} per benchmark"))
        console.print(f"wrote {folder / 'summary.md'} and summary.csv", markup=False)
    return folder
