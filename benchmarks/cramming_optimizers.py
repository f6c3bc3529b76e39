"""What makes cramming converge in few steps: optimiser settings tried on the same texts.

Each method crams the same texts (one vector each, SmolLM2-135M, fp32) and prints how many reached
teacher-forced accuracy 1.0 (and, where set, the stop margin), the steps each took, the best
accuracy and smallest logit margin of each, and the wall time. Methods are protocols as in
`cramming.optimizer_settings` (a schedule decays over the method's own step budget), plus one
quasi-Newton run (torch.optim.LBFGS with a strong-Wolfe line search, one text at a time, counting
forward/backward evaluations as steps). The table these methods printed on a 2-core CPU is
benchmarks/cramming_optimizers.txt; `fast` in config/config.yaml is the last row's protocol plus
two restarts from fresh inits.

    snakemake --cores 2 resources/models/SmolLM2-135M resources/data/embedded_prose.parquet
    python benchmarks/cramming_optimizers.py [--only NAME ...]
"""

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from soft_tokens.core.models import load_model  # noqa: E402
from soft_tokens.core.optimiser import OptimSettings, optimise_prefixes, weighted_loss_and_accuracy  # noqa: E402
from soft_tokens.core.prefix import prefix_forward  # noqa: E402
from soft_tokens.cramming.job import initial_vectors, task_for  # noqa: E402
from soft_tokens.data.corpora import cramming_samples, read_corpus  # noqa: E402

PREPARE = "snakemake --cores 2 resources/models/SmolLM2-135M resources/data/embedded_prose.parquet"
HIDDEN_CAPACITY = dict(lr=0.01, betas=(0.9, 0.9), weight_decay=0.01, schedule="constant", warmup_steps=0)
COSINE = dict(betas=(0.9, 0.9), weight_decay=0.01, schedule="cosine", warmup_steps=20)
# name -> (placement, step budget, OptimSettings keys)
METHODS = {
    "hidden_capacity's optimiser": ("first", 300, HIDDEN_CAPACITY),
    "hidden_capacity's, BOS before vector": ("after_bos", 300, HIDDEN_CAPACITY),
    "lr 0.1 cosine": ("first", 300, dict(COSINE, lr=0.1)),
    "lr 0.1 cosine, BOS first": ("after_bos", 300, dict(COSINE, lr=0.1)),
    "lr 0.1 constant, BOS first": ("after_bos", 300, dict(HIDDEN_CAPACITY, lr=0.1)),
    "lr 0.1 cosine, CE temperature 0.25, BOS first": ("after_bos", 300, dict(COSINE, lr=0.1, temperature=0.25)),
    "lr 0.3 cosine, BOS first": ("after_bos", 300, dict(COSINE, lr=0.3)),
    "lr 0.3 cosine, BOS first, 150 steps": ("after_bos", 150, dict(COSINE, lr=0.3)),
    "lr 0.3 cosine, BOS first, margin 1": ("after_bos", 300, dict(COSINE, lr=0.3, margin=1.0)),
    "lr 1 cosine, BOS first, 150 steps": ("after_bos", 150, dict(COSINE, lr=1.0)),
    "lr 1 cosine, betas 0.9/0.99, BOS first, 150 steps": ("after_bos", 150, dict(COSINE, lr=1.0, betas=(0.9, 0.99))),
    "lr 1 cosine, BOS first": ("after_bos", 300, dict(COSINE, lr=1.0)),
    "lr 10 cosine, BOS first, 150 steps": ("after_bos", 150, dict(COSINE, lr=10.0)),
    "lr 3 cosine, vector first, 150 steps, stop 0.99": ("first", 150, dict(COSINE, lr=3.0, stop_accuracy=0.99)),
    "L-BFGS (strong Wolfe), BOS first": ("after_bos", 150, "lbfgs"),
    "lr 3 cosine, BOS first, 150 steps": ("after_bos", 150, dict(COSINE, lr=3.0)),
    "lr 3 cosine, BOS first, 150 steps, margin 1": ("after_bos", 150, dict(COSINE, lr=3.0, margin=1.0)),
}


def job(placement: str) -> SimpleNamespace:
    """The settings task_for and initial_vectors read."""
    return SimpleNamespace(variant="base", leading_tokens=2, leading_weight=3.0, init="randn", n_mem=1, seed=1337,
                           optimizer_settings=dict(placement=placement, init_scale=1.0))


class Reached(Exception):
    """Raised inside the closure to end L-BFGS as soon as the text is reconstructed."""


def lbfgs_one(model, task, budget: int) -> tuple:
    """(evaluations, best accuracy, reached) of L-BFGS alone on one text."""
    vec = torch.nn.Parameter(task.init[None].clone())
    lead = model.get_input_embeddings()(task.lead_ids)[None].detach()
    opt = torch.optim.LBFGS([vec], lr=1.0, max_iter=budget, max_eval=budget, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)
    state = {"evals": 0, "best": 0.0}

    def closure():
        opt.zero_grad()
        logits = prefix_forward(model, torch.cat([lead, vec], 1), task.target_ids[None])["logits"]
        loss, acc = weighted_loss_and_accuracy(logits, task.target_ids[None], task.weights[None])
        loss.backward()
        state["evals"] += 1
        state["best"] = max(state["best"], float(acc))
        if state["best"] >= 1.0:
            raise Reached
        return loss

    try:
        opt.step(closure)
    except Reached:
        pass
    return state["evals"], state["best"], state["best"] >= 1.0


def lbfgs(model, tasks, budget: int) -> list[tuple]:
    """L-BFGS one text at a time (its line search is per problem), evaluations counted as steps."""
    for p in model.parameters():
        p.requires_grad_(False)
    return [lbfgs_one(model, task, budget) for task in tasks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--n-samples", type=int, default=4)
    parser.add_argument("--only", nargs="*", default=list(METHODS), help="method names to run")
    args = parser.parse_args()
    model_dir, corpus = ROOT / "resources/models/SmolLM2-135M", ROOT / "resources/data/embedded_prose.parquet"
    if not model_dir.exists() or not corpus.exists():
        sys.exit(f"the prepared model or corpus is missing; prepare them once with:\n    {PREPARE}")
    torch.set_num_threads(2)
    model, tokenizer = load_model(model_dir, "cpu", "float32")
    embedding = model.get_input_embeddings().weight
    samples = cramming_samples(read_corpus(corpus), tokenizer, args.n_samples, args.length, False, 1337, "bench")
    print(f"SmolLM2-135M, {args.n_samples} texts x {args.length} tokens, one vector each; "
          "reached = TF accuracy 1.0 (and the margin, where set)")
    for name in args.only:
        placement, budget, settings = METHODS[name]
        p = job(placement)
        tasks = [task_for(s["sample_id"], torch.tensor(s["input_ids"]), initial_vectors(p, embedding, s["sample_id"]),
                          p)[0] for s in samples]
        start = time.perf_counter()
        if settings == "lbfgs":
            rows = lbfgs(model, tasks, budget)
        else:
            results = []
            s = OptimSettings(max_steps=budget, patience=budget, batch_size=len(tasks), **settings)
            optimise_prefixes(model, tasks, s, results.append, name)
            rows = [(r.steps, r.best_accuracy, r.status == "converged") for r in sorted(results, key=lambda r: r.key)]
        seconds = time.perf_counter() - start
        print(f"{name:<50} budget {budget:>3}  reached {sum(r[2] for r in rows)}/{len(rows)}  "
              f"steps {[r[0] for r in rows]}  best TF {[round(r[1], 3) for r in rows]}  {seconds:5.0f} s", flush=True)


if __name__ == "__main__":
    main()
