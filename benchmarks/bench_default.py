"""What the embedded default shows (issue 13, points 1-4 and 6), read from MLflow runs.

    python benchmarks/bench_default.py --uri sqlite:///mlflow.db [--parent RUN_ID... | --latest] [--no-model]
                                       [--figure reports/methods.png]

Takes the GRPO, EntReg and AEnt training runs under one or more parent runs (`aent ablate methods`, e.g.
one per seed; default: the newest such parent in the store), or with --latest the newest finished training run of each of the
three methods in the store, and prints, per point:
1. collapse: GRPO's mean token entropy H of the last 10 steps over that of the first 10 (want <= 0.40);
2. clamping: at the start of RL (the cached warm-started model, on sampled responses to held-out
   prompts) the probability the dropped bottom-p tokens carry, and (H - H~) / H, from the model and from
   the runs' first 10 steps (want >= 10%);
3. exploration: the warm-started model's two answer paths, how often each is sampled and how often it
   is right (the likely one only partly right, the less likely one more often), and the trained models';
4. AEnt's controller: the share of steps from lambda's start on with H~ inside [h_low, h_high] (want
   >= 80%), and how often lambda sits at a bound; EntReg's and GRPO's H~ in the same band;
6. the alarm: each run's lowest actor/entropy_collapse and the step its warning tag names.
Also val/acc at the start, the end and best. --seeds groups several seeds (trainer.seed) per method.
"""
from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from typing import Dict, List

import torch

from aent_cli.tracking import store

KEYS = ("actor/entropy", "actor/clamped_entropy", "actor/entropy_coef", "actor/entropy_collapse", "val/acc",
        "response_length/mean", "reward/mean")
NAMES = {"grpo": "GRPO", "entreg": "EntReg", "aent": "AEnt"}


def newest_parent(client) -> str:
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "tags.`aent.ablation` = 'methods'", order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise SystemExit("no `aent ablate methods` parent run in this store: pass --parent")
    return runs[0].info.run_id


def latest_per_method(client):
    """The newest FINISHED training run of each method (GRPO, EntReg, AEnt) in the store."""
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "tags.`aent.kind` = 'train' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1000)
    chosen = {}
    for run in runs:
        chosen.setdefault(run.data.params.get("algo.name"), run)
    return [chosen[name] for name in NAMES if name in chosen]


def children(client, parent: str):
    parent_run = client.get_run(parent)
    return client.search_runs([parent_run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'",
                               max_results=1000)


def has_run(client, run_id: str) -> bool:
    try:
        client.get_run(run_id)
        return True
    except Exception:  # mlflow raises MlflowException for an unknown id
        return False


def values(history: Dict[str, list], key: str) -> List[float]:
    return [v for _, v in sorted(history.get(key, []))]


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def path_stats(model_dir: str, p: float, n_prompts: int, samples: int, seed: int = 0) -> Dict[str, float]:
    """Sample the model on held-out prompts (temperature 1): share and accuracy of each answer path,
    and per-token H, H~ and dropped-token mass, computed here with plain torch (sort, not the kernels)."""
    from transformers import AutoModelForCausalLM

    from aent_cli.config import compose_config
    from aent_cli.data.arithmetic import test_problems
    from aent_cli.models.loading import load_tokenizer
    from aent_cli.rewards import math_reward
    from aent_cli.rollout import SamplingParams, build_rollout

    tok = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    problems = test_problems()[:n_prompts]
    torch.manual_seed(seed)
    gen = build_rollout(compose_config([]).rollout, model, tok).generate(
        [q.problem for q in problems], SamplingParams(n=samples, temperature=1.0, max_new_tokens=32))
    count, right = defaultdict(int), defaultdict(float)
    rows = []
    with torch.no_grad():
        for g, q in zip(gen, problems):
            for c in g.completions:
                kind = "direct" if c.text.startswith("\\boxed") else ("worked" if c.text[:1].isdigit() else "other")
                count[kind] += 1
                right[kind] += math_reward(c.text, q.answer)
                ids = torch.tensor([list(g.prompt_ids) + list(c.token_ids)])
                logits = model(input_ids=ids).logits[0].float()
                rows.append(logits[len(g.prompt_ids) - 1:len(g.prompt_ids) - 1 + len(c.token_ids)])
    x = torch.cat(rows)
    drop = int(p * x.shape[-1])
    logp = torch.log_softmax(x, -1)
    h = -(logp.exp() * logp).sum(-1)
    kept = x >= torch.sort(x, -1).values[:, drop:drop + 1]
    kept_logp = torch.log_softmax(x.masked_fill(~kept, float("-inf")), -1)
    h_kept = -(kept_logp.exp() * kept_logp.masked_fill(~kept, 0.0)).sum(-1)
    total = sum(count.values())
    out = {"tokens": float(x.shape[0]), "H": h.mean().item(), "H~": h_kept.mean().item(),
           "dropped_mass_mean": (logp.exp() * ~kept).sum(-1).mean().item(),
           "dropped_mass_max": (logp.exp() * ~kept).sum(-1).max().item()}
    for kind in ("direct", "worked", "other"):
        out[f"{kind}_share"] = count[kind] / total
        out[f"{kind}_acc"] = right[kind] / count[kind] if count[kind] else float("nan")
    return out


def fmt(xs: List[float]) -> str:
    xs = [x for x in xs if x == x]
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f} (min {min(xs):.3f}, max {max(xs):.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uri", default=["sqlite:///mlflow.db"], nargs="+", help="one store, or several (--latest, or parents in different stores)")
    ap.add_argument("--parent", default=None, nargs="+",
                    help="the parent run(s) of `aent ablate methods` (default: newest); several: one per seed")
    ap.add_argument("--latest", action="store_true", help="the newest finished run of each method, not a parent's")
    ap.add_argument("--figure", default=None, help="also draw the methods figure of these runs to this PNG")
    ap.add_argument("--no-model", action="store_true", help="skip the sampled measurements of points 2 and 3")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--samples", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)

    clients = [store.client(uri) for uri in args.uri]
    client = clients[0]
    if args.latest:  # newest per method over all the stores given
        found = sorted(((r.info.start_time, r, c) for c in clients for r in latest_per_method(c)),
                       key=lambda x: x[0], reverse=True)
        chosen = {}
        for _, run, c in found:
            chosen.setdefault(run.data.params["algo.name"], (run, c))
        runs = [chosen[n][0] for n in NAMES if n in chosen]
        client_of = {chosen[n][0].info.run_id: chosen[n][1] for n in chosen}
        print(f"newest finished run per method in {args.uri}: " + ", ".join(
            f"{NAMES[r.data.params['algo.name']]} {r.info.run_id}" for r in runs))
    else:
        parents = args.parent or [newest_parent(client)]
        runs, client_of = [], {}
        for parent in parents:  # each parent in whichever of the stores holds it
            owner = next((c for c in clients if has_run(c, parent)), None)
            if owner is None:
                raise SystemExit(f"parent run {parent} is in none of the stores {args.uri}")
            for run in children(owner, parent):
                runs.append(run)
                client_of[run.info.run_id] = owner
        print(f"parent run(s) {' '.join(parents)}: {len(runs)} training runs in {' '.join(args.uri)}")
    by_method: Dict[str, list] = defaultdict(list)
    order = list(NAMES)  # GRPO, EntReg, AEnt, whichever job started first
    for run in sorted(runs, key=lambda r: order.index(r.data.params.get("algo.name"))
                      if r.data.params.get("algo.name") in order else len(order)):
        name = NAMES.get(run.data.params.get("algo.name", ""), run.data.params.get("algo.name", "?"))
        by_method[name].append((run, store.metric_history(client_of[run.info.run_id], run.info.run_id, KEYS)))

    if args.figure:
        from aent_cli.tracking import methods_figure

        curves = [methods_figure.MethodCurves(name, hist) for name, items in by_method.items() for _, hist in items]
        band, bounds = methods_figure.band_and_bounds({r.info.run_id: r.data.params for r in runs})
        print("figure:", methods_figure.plot_methods(curves, args.figure, band=band, bounds=bounds))

    print("\n1. collapse: mean H of the last 10 steps / first 10 steps (want <= 0.40 for GRPO)")
    for name, items in by_method.items():
        ratios, firsts, lasts = [], [], []
        for _, hist in items:
            h = values(hist, "actor/entropy")
            firsts.append(mean(h[:10]))
            lasts.append(mean(h[-10:]))
            ratios.append(lasts[-1] / firsts[-1])
        print(f"   {name:7s} H first 10 {fmt(firsts)}  last 10 {fmt(lasts)}  ratio {fmt(ratios)}")

    print("\n2. clamping: (H - H~) / H over the first 10 steps (want >= 0.10)")
    for name, items in by_method.items():
        rel = [(mean(values(hist, "actor/entropy")[:10]) - mean(values(hist, "actor/clamped_entropy")[:10]))
               / mean(values(hist, "actor/entropy")[:10]) for _, hist in items]
        print(f"   {name:7s} {fmt(rel)}")

    if not args.no_model:
        any_run = runs[0]
        p = float(next((r.data.params["algo.p"] for r in runs if r.data.params.get("algo.name") == "aent"), "0.33"))
        from aent_cli.config import compose_config
        from aent_cli.models.loading import resolve_model_path

        start_dir = resolve_model_path(compose_config([
            f"model.tiny_warmstart_steps={any_run.data.params['model.tiny_warmstart_steps']}",
            f"model.tiny_seed={any_run.data.params['model.tiny_seed']}"]).model)
        s = path_stats(start_dir, p, args.prompts, args.samples)
        print(f"   warm-started model, {int(s['tokens'])} sampled response tokens, p={p:g}: dropped bottom-p tokens "
              f"carry {s['dropped_mass_mean']:.4f} of the probability per token on average (max {s['dropped_mass_max']:.3f}); "
              f"H {s['H']:.3f}, H~ {s['H~']:.3f}, (H - H~) / H = {(s['H'] - s['H~']) / s['H']:.3f}")
        print("\n3. exploration: answer paths sampled at temperature 1 on held-out prompts (share, accuracy)")
        print(f"   warm start: direct {s['direct_share']:.2f} (acc {s['direct_acc']:.2f}), worked {s['worked_share']:.2f} "
              f"(acc {s['worked_acc']:.2f}), other {s['other_share']:.2f}")
        for name, items in by_method.items():
            for run, _ in items:
                final = run.data.tags.get("aent.final_model_dir")
                if final:
                    t = path_stats(final, p, args.prompts, args.samples)
                    print(f"   {name:7s} seed {run.data.params.get('trainer.seed')} trained: direct {t['direct_share']:.2f} "
                          f"(acc {t['direct_acc']:.2f}), worked {t['worked_share']:.2f} (acc {t['worked_acc']:.2f}), "
                          f"H {t['H']:.3f}")

    print("\n4. AEnt's band: share of steps >= lambda's start with H~ in [h_low, h_high] (want >= 0.80)")
    aent_params = next((r.data.params for r in runs if r.data.params.get("algo.name") == "aent"), None)
    if aent_params:
        lo, hi = float(aent_params["algo.h_low"]), float(aent_params["algo.h_high"])
        cmin, cmax = float(aent_params["algo.coef.min"]), float(aent_params["algo.coef.max"])
        start = int(aent_params["algo.coef.start_step"])
        print(f"   band [{lo:g}, {hi:g}], lambda in [{cmin:g}, {cmax:g}], updates from step {start}")
        for name, items in by_method.items():
            inside, below, above, at_min, at_max = [], [], [], [], []
            for _, hist in items:
                pts = [(s_, v) for s_, v in sorted(hist.get("actor/clamped_entropy", [])) if s_ >= start]
                lam = [(s_, v) for s_, v in sorted(hist.get("actor/entropy_coef", [])) if s_ > start]
                inside.append(mean(lo <= v <= hi for _, v in pts))
                below.append(mean(v < lo for _, v in pts))
                above.append(mean(v > hi for _, v in pts))
                at_min.append(mean(abs(v - cmin) < 1e-12 for _, v in lam))
                at_max.append(mean(abs(v - cmax) < 1e-12 for _, v in lam))
            extra = f"  lambda at min {fmt(at_min)}, at max {fmt(at_max)}" if name == "AEnt" else ""
            print(f"   {name:7s} H~ in band {fmt(inside)} (below {fmt(below)}, above {fmt(above)}){extra}")

    print("\n6. alarm: lowest actor/entropy_collapse and the warning's step tag")
    for name, items in by_method.items():
        for run, hist in items:
            c = values(hist, "actor/entropy_collapse")
            print(f"   {name:7s} seed {run.data.params.get('trainer.seed')}: min {min(c) if c else float('nan'):.3f}, "
                  f"aent.entropy_collapse_step = {run.data.tags.get('aent.entropy_collapse_step', '-')}")

    print("\nval/acc: start, final, best (mean ± sd over seeds)")
    for name, items in by_method.items():
        starts = [values(h, "val/acc")[0] for _, h in items if values(h, "val/acc")]
        finals = [values(h, "val/acc")[-1] for _, h in items if values(h, "val/acc")]
        bests = [max(values(h, "val/acc")) for _, h in items if values(h, "val/acc")]
        print(f"   {name:7s} n={len(items)} start {fmt(starts)}  final {fmt(finals)}  best {fmt(bests)}")


if __name__ == "__main__":
    main()
