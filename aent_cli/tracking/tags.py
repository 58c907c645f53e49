"""Every MLflow tag name aent writes or reads, in one place (values are strings; MLflow caps them at
5,000 characters). `aent.kind` says what a run is; the others link runs and record where they came from.
A tag name written anywhere else in the package is a bug (tests/test_layers.py checks the literals)."""
from __future__ import annotations

# What a run is: train | eval | sweep | report (KIND_* below).
KIND = "aent.kind"
KIND_TRAIN, KIND_EVAL, KIND_SWEEP, KIND_REPORT = "train", "eval", "sweep", "report"

# Training runs.
RUN_DIR = "aent.run_dir"  # absolute path of the run's output folder (checkpoints, trainer_state.json)
ALGO = "aent.algo"  # algo.name
FINAL_MODEL_DIR = "aent.final_model_dir"  # where the final model was saved
ENTROPY_COLLAPSE_STEP = "aent.entropy_collapse_step"  # first step with a collapsed entropy

# Eval runs: which model they scored and, for a training run's checkpoint, which run and step.
MODEL = "aent.model"  # the row label
MODEL_PATH = "aent.model_path"
MODEL_REF = "aent.model_ref"  # what --model said
SOURCE_RUN_ID = "aent.source_run_id"
CHECKPOINT = "aent.checkpoint"  # checkpoint folder name (step_40, final)
CHECKPOINT_STEP = "aent.checkpoint_step"  # its step, "" when unknown
PROMPT_TEMPLATE_PREFIX = "aent.prompt_template."  # + benchmark name: the template used

# Sweeps: the parent run and one tag set per job on its child run.
SWEEP_NAME = "aent.sweep.name"
SWEEP_FILE = "aent.sweep.file"
SWEEP_LAUNCHER = "aent.sweep.launcher"
SWEEP_OVERRIDES = "aent.sweep.overrides"  # parent: the overrides of every job; child: this job's
SWEEP_JOBS = "aent.sweep.jobs"  # parent: number of jobs
SWEEP_JOB = "aent.sweep.job"  # child: job index
SWEEP_LABEL = "aent.sweep.label"  # child: job label
SWEEP_PROCESS = "aent.sweep.process"  # child: host:pid that ran the job (which worker / cluster node)
OVERRIDE_PREFIX = "aent.override."  # + override key (non-word characters as _): one tag per override
ABLATION = "aent.ablation"  # parent of `aent ablate`: the ablation's name
ERROR = "aent.error"  # why a run or job failed

# Report runs.
REPORT_RUNS = "aent.report.runs"  # comma-separated run ids of the rows
REPORT_CHECKPOINT = "aent.report.checkpoint"
REPORT_SCORE = "aent.report.score"

# MLflow's own tags.
PARENT_RUN_ID = "mlflow.parentRunId"  # nests a child run under its parent in the UI
EXPERIMENT_KIND = "mlflow.experimentKind"  # experiment tag: which page the UI opens
