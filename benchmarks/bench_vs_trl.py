"""Steps per hour of aent against TRL's GRPOTrainer, on the same work, in one invocation.

    python benchmarks/bench_vs_trl.py [--steps 8] [--warmup 2] [--threads 1] [--trainers ...] [--base-tree DIR]
    python benchmarks/bench_vs_trl.py --model ~/.cache/aent/models/SmolLM2-135M-Instruct --max-new-tokens 128 \
        --prompts 2 --group 4 --steps 2 --warmup 1 --trainers aent-grpo,trl-grpo

Same work for every trainer: the embedded tiny Qwen2 or `--model DIR` (`load_policy`), the same arithmetic prompts in
the same order (aent's own query sampler), G completions per prompt, the same max new tokens,
temperature 1 / top-p 1, one AdamW update per step over the whole batch (same lr, betas, grad
clip), the PPO clip 0.2, no KL, fp32, no gradient checkpointing, and aent's training reward
(`strict` extraction) as the reward (aent grades through its batched Grader, TRL calls one per completion).
The aent rows drive the library (`compose_config` -> `TrainingSetup` -> `train_step`, MLflow
logging included) into a throwaway MLflow store; the TRL row is `GRPOTrainer.train()` without vLLM
(loss_type grpo, beta 0), metrics logged every step.

Each trainer runs in its own worker process (so peak RSS is its own), and the coordinator steps
them in turn, rotating the order every round: a busy neighbour on a shared machine slows all of them
alike, and the ratios hold. Only one worker computes at a time. Needs the `bench` extra (trl).
`--base-tree DIR` adds rows `base-aent-*` that run the aent trainers from another checkout of this
repository (before/after figures for an engine change, measured in the same interleaved run).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAINERS = ("aent-grpo", "aent-aent", "trl-grpo", "trl-entropy")
DEFAULT_TRAINERS = "aent-grpo,aent-aent,trl-grpo"
TRL_ENTROPY_COEF = 0.01  # trl-entropy: TRL's own (ordinary) entropy bonus, for its cost only


# ----------------------------------------------------------------------------------------------
# worker side


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _overrides(args, algo: str, workdir: Path) -> list[str]:
    model = [] if args.model == "tiny" else ["model=hf", f"model.path={Path(args.model).expanduser().resolve()}"]
    return model + [f"algo={algo}", "trainer.device=cpu", f"trainer.threads={args.threads}",
            f"trainer.batch_size={args.prompts}", f"trainer.mini_batch_size={args.prompts}",
            "trainer.ppo_epochs=1", f"trainer.lr={args.lr}", f"trainer.seed={args.seed}",
            f"rollout.n={args.group}", f"rollout.max_new_tokens={args.max_new_tokens}",
            "rollout.temperature=1.0", "rollout.top_p=1.0", "rollout.top_k=-1", "model.dtype=float32",
            "model.gradient_checkpointing=false", "algo.kl_coef=0.0",
            f"trainer.output_dir={workdir / 'runs'}", f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}"]


class _Channel:
    """JSON lines to the coordinator on the original stdout; library prints go to stderr."""

    def __init__(self) -> None:
        self.out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)

    def send(self, **msg) -> None:
        self.out.write(json.dumps(msg) + "\n")

    @staticmethod
    def command() -> str:
        return sys.stdin.readline().strip() or "stop"


def _aent_worker(args, algo: str, workdir: Path, chan: _Channel) -> None:
    from aent_cli.algos.coef import build_coef
    from aent_cli.config import compose_config
    from aent_cli.engine.sampler import QuerySampler
    from aent_cli.engine.setup import RunContext, TrainingSetup
    from aent_cli.engine.trainer import train_step

    cfg = compose_config(_overrides(args, algo, workdir))
    setup = TrainingSetup.build(cfg, RunContext(quiet=True))
    t = cfg.trainer
    sampler = QuerySampler(len(setup.train_problems), t.batch_size, t.seed, cfg.data.shuffle)
    coef = build_coef(cfg.algo, sampler.steps_per_epoch)
    n_completions = t.batch_size * cfg.rollout.n
    import aent_cli

    chan.send(ready=True, rss_mib=_rss_mib(), threads=__import__("torch").get_num_threads(),
              source=str(Path(aent_cli.__file__).parents[1]))
    step = 0
    while chan.command() == "step":
        step += 1
        started = time.perf_counter()
        metrics = train_step(setup, coef, sampler, step)
        setup.tracker.log(metrics, step)  # as the training loop does, flushes included
        seconds = time.perf_counter() - started
        chan.send(seconds=seconds, tokens=metrics["response_length/mean"] * n_completions,
                  reward=metrics["reward/mean"],
                  phases={k.split("/")[1]: v for k, v in metrics.items() if k.startswith("timing/")})
    setup.tracker.end("FINISHED")
    setup.close()
    chan.send(peak_rss_mib=_peak_rss_mib())


def _trl_worker(args, entropy: bool, workdir: Path, chan: _Channel) -> None:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from aent_cli.config import compose_config
    from aent_cli.data.prompts import render_prompt, resolve_template
    from aent_cli.engine.sampler import QuerySampler
    from aent_cli.engine.setup import load_split
    from aent_cli.models.loading import load_policy
    from aent_cli.rewards import TRAIN_EXTRACTOR, Grader

    cfg = compose_config(_overrides(args, "grpo", workdir))
    torch.set_num_threads(args.threads or torch.get_num_threads())
    torch.manual_seed(args.seed)
    model, tok = load_policy(cfg.model, "cpu")
    template = resolve_template(cfg.model.prompt_template, tok)
    problems = load_split(cfg, "train")
    # aent's query order, laid out so TRL's unshuffled sampler serves the same prompts each step
    sampler = QuerySampler(len(problems), args.prompts, args.seed, cfg.data.shuffle)
    total = args.warmup + args.steps + 2
    rows = [problems[i] for _ in range(total) for i in sampler.next_batch()]
    data = Dataset.from_dict({"prompt": [render_prompt(p.problem, template, tok) for p in rows],
                              "answer": [p.answer for p in rows]})

    # aent's training reward (`strict` extraction; math_reward grades as `aent eval`, `auto`), per completion
    grader = Grader(extractor=TRAIN_EXTRACTOR)

    def arithmetic_reward(prompts, completions, answer, **_):
        return [grader.grade([c], [a]).rewards[0] for c, a in zip(completions, answer)]

    config = GRPOConfig(
        output_dir=str(workdir / "trl"), per_device_train_batch_size=args.prompts * args.group,
        gradient_accumulation_steps=1, num_generations=args.group, max_completion_length=args.max_new_tokens,
        temperature=1.0, top_p=1.0, top_k=0, repetition_penalty=1.0, beta=0.0, loss_type="grpo",
        num_iterations=1, epsilon=cfg.algo.clip_eps_low, epsilon_high=cfg.algo.clip_eps_high,
        scale_rewards="group", learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=cfg.trainer.weight_decay, adam_beta1=cfg.trainer.betas[0], adam_beta2=cfg.trainer.betas[1],
        adam_epsilon=1e-8, max_grad_norm=cfg.trainer.grad_clip, optim="adamw_torch", bf16=False, fp16=False,
        gradient_checkpointing=False, use_cpu=True, report_to="none", logging_steps=1, save_strategy="no",
        disable_tqdm=True, shuffle_dataset=False, seed=args.seed, data_seed=args.seed, max_steps=total,
        dataloader_num_workers=0, entropy_coef=TRL_ENTROPY_COEF if entropy else 0.0, log_completions=False)
    n_completions = args.prompts * args.group

    class Lockstep(TrainerCallback):
        """Reports each finished step, then waits for the coordinator's next command. The step's
        clock starts when the command arrives, so TRL's logging of the previous step counts."""

        def __init__(self) -> None:
            self.started = 0.0
            self.trainer = None

        def on_step_end(self, _args, state, control, **_kw):
            seconds = time.perf_counter() - self.started
            metrics = self.trainer._metrics["train"]
            chan.send(seconds=seconds, tokens=metrics["completions/mean_length"][-1] * n_completions,
                      reward=metrics["reward"][-1], phases={})
            if chan.command() != "step":
                control.should_training_stop = True
            self.started = time.perf_counter()
            return control

    grader.start()  # its math-verify process warms up now, as aent's does in TrainingSetup
    lockstep = Lockstep()
    trainer = GRPOTrainer(model=model, reward_funcs=arithmetic_reward, args=config, train_dataset=data,
                          processing_class=tok, callbacks=[lockstep])
    lockstep.trainer = trainer
    chan.send(ready=True, rss_mib=_rss_mib(), threads=torch.get_num_threads())
    if chan.command() == "step":
        lockstep.started = time.perf_counter()
        trainer.train()
    chan.send(peak_rss_mib=_peak_rss_mib())


def worker_main(args) -> None:
    chan = _Channel()
    workdir = Path(args.workdir)
    name = args.worker.removeprefix("base-")
    if name.startswith("aent-"):
        _aent_worker(args, name.split("-", 1)[1], workdir, chan)
    else:
        _trl_worker(args, args.worker == "trl-entropy", workdir, chan)


# ----------------------------------------------------------------------------------------------
# coordinator side


class Worker:
    def __init__(self, name: str, args, root: Path) -> None:
        self.name = name
        self.workdir = root / name
        self.workdir.mkdir()
        self.log = open(self.workdir / "worker.log", "w+")
        argv = [sys.executable, __file__, "--worker", name, "--workdir", str(self.workdir)]
        for key in ("steps", "warmup", "threads", "prompts", "group", "max_new_tokens", "lr", "seed", "model"):
            argv += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
        env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false",
                   MLFLOW_TRACKING_URI=f"sqlite:///{self.workdir / 'mlflow.db'}")
        if name.startswith("base-"):  # import aent_cli (and its conf/) from the other checkout
            tree = str(Path(args.base_tree).resolve())
            env.update(PYTHONPATH=os.pathsep.join(filter(None, (tree, env.get("PYTHONPATH")))), AENT_HOME=tree)
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, bufsize=1, env=env)
        self.steps: list[dict] = []
        self.info: dict = {}

    def reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.log.seek(0)
            tail = self.log.read()[-3000:]
            raise SystemExit(f"worker {self.name} died (exit {self.proc.wait()}):\n{tail}")
        return json.loads(line)

    def tell(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.reply()


def _median(values):
    return statistics.median(values) if values else float("nan")


def _quartiles(values):
    if len(values) < 4:
        return min(values), max(values)
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def coordinate(args) -> None:
    names = [n.strip() for n in args.trainers.split(",") if n.strip()]
    unknown = [n for n in names if n not in TRAINERS]
    if unknown:
        raise SystemExit(f"--trainers: unknown {', '.join(unknown)}; choose from {', '.join(TRAINERS)}")
    if args.base_tree:
        if not (Path(args.base_tree) / "aent_cli").is_dir():
            raise SystemExit(f"--base-tree {args.base_tree}: no aent_cli package there")
        names += [f"base-{n}" for n in names if n.startswith("aent-")]
    import torch
    import transformers

    if args.lr is None:
        from aent_cli.config import compose_config

        args.lr = compose_config([]).trainer.lr
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    if any(n.startswith("trl") for n in names):
        import trl

        versions += f", trl {trl.__version__}"
    with tempfile.TemporaryDirectory(prefix="aent-bench-") as tmp:
        workers = []
        for name in names:  # started one at a time: start-up is CPU-heavy and not measured
            worker = Worker(name, args, Path(tmp))
            worker.info = worker.reply()
            workers.append(worker)
            source = f", aent_cli from {worker.info['source']}" if "source" in worker.info else ""
            print(f"  {name}: ready ({worker.info['threads']} torch threads, RSS {worker.info['rss_mib']:.0f} MiB"
                  f"{source})", file=sys.stderr, flush=True)
        rounds = args.warmup + args.steps
        for r in range(rounds):
            order = workers[r % len(workers):] + workers[:r % len(workers)]
            for worker in order:
                result = worker.tell("step")
                if r >= args.warmup:
                    worker.steps.append(result)
            line = "  ".join(f"{w.name} {w.steps[-1]['seconds']:.3f}s" if r >= args.warmup else w.name
                             for w in workers)
            print(f"  round {r + 1}/{rounds}{' (warm-up)' if r < args.warmup else ''}: {line}",
                  file=sys.stderr, flush=True)
        for worker in workers:
            worker.info.update(worker.tell("stop"))
            worker.proc.wait(timeout=120)
    report(args, workers, versions)


def report(args, workers, versions: str) -> None:
    load = os.getloadavg()
    print(f"\nSame work per step: {args.prompts} prompts x {args.group} completions, <= {args.max_new_tokens} new "
          f"tokens, {'embedded tiny Qwen2' if args.model == 'tiny' else args.model}, one AdamW update (lr {args.lr}), CPU fp32, {args.threads or 'default'} "
          f"torch thread(s) each.")
    print(f"{args.steps} measured steps per trainer after {args.warmup} warm-up, interleaved round by round. "
          f"{versions}, Python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
          f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}.\n")
    header = (f"{'trainer':<15} {'s/step':>8} {'(IQR)':>15} {'mean':>7} {'steps/h':>8} {'gen tok/s':>10} "
              f"{'reward':>7} {'peak RSS MiB':>13}")
    print("s/step: median over the measured steps (IQR, mean beside it); steps/h and gen tok/s from medians.")
    print(header)
    print("-" * len(header))
    summary = {}
    for w in workers:
        secs = [s["seconds"] for s in w.steps]
        tok_s = [s["tokens"] / s["seconds"] for s in w.steps]
        med = _median(secs)
        lo, hi = _quartiles(secs)
        summary[w.name] = {"s_per_step": med, "tok_s": _median(tok_s)}
        print(f"{w.name:<15} {med:8.3f} {f'({lo:.3f}-{hi:.3f})':>15} {statistics.fmean(secs):7.3f} "
              f"{3600 / med:8.0f} {_median(tok_s):10.0f} {statistics.fmean(s['reward'] for s in w.steps):7.3f} "
              f"{w.info['peak_rss_mib']:13.0f}")
    phases = {}
    for w in workers:
        if w.steps and w.steps[0]["phases"]:
            keys = w.steps[0]["phases"]
            phases[w.name] = "  ".join(f"{k} {_median([s['phases'][k] for s in w.steps]):.3f}s" for k in keys)
    if phases:
        print("\naent phases (median):")
        for name, line in phases.items():
            print(f"  {name:<10} {line}")
    print("\nRatios: of the medians above, and [median of the per-round ratios] (each round runs every "
          "trainer back to back, so a busy spell on the machine cancels out of its ratio):")
    by_name = {w.name: w for w in workers}

    def paired(slow: str, fast: str) -> float:
        return _median([b["seconds"] / a["seconds"] for a, b in zip(by_name[fast].steps, by_name[slow].steps)])

    for name in ("aent-grpo", "aent-aent"):
        for peer in ("trl-grpo", "trl-entropy", f"base-{name}"):
            if name in summary and peer in summary:
                a, b = summary[name], summary[peer]
                print(f"  {name} / {peer}: {b['s_per_step'] / a['s_per_step']:.2f}x [{paired(peer, name):.2f}x] "
                      f"steps per hour, {a['tok_s'] / b['tok_s']:.2f}x generated tokens per second")
    for slow, fast in (("aent-aent", "aent-grpo"), ("trl-entropy", "trl-grpo")):
        if slow in summary and fast in summary:
            extra = summary[slow]["s_per_step"] / summary[fast]["s_per_step"] - 1
            print(f"  {slow} step vs {fast} step: {extra:+.1%} [{paired(slow, fast) - 1:+.1%}] time")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trainers", default=DEFAULT_TRAINERS, help=f"comma-separated, from {', '.join(TRAINERS)}")
    ap.add_argument("--steps", type=int, default=8, help="measured steps per trainer")
    ap.add_argument("--warmup", type=int, default=2, help="unmeasured steps first")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per trainer (0 = torch's default)")
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step")
    ap.add_argument("--group", type=int, default=8, help="completions per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--lr", type=float, default=None, help="default: aent's trainer.lr")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="tiny", help="tiny (the embedded model) or a model directory (model=hf)")
    ap.add_argument("--base-tree", help="another checkout: also run its aent trainers (rows base-aent-*)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


if __name__ == "__main__":
    parsed = parse_args()
    if parsed.worker:
        worker_main(parsed)
    else:
        coordinate(parsed)
