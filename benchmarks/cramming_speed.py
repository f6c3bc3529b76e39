"""Time to converge: the default cramming optimiser, batched, against the paper's protocol one text at a time.

Both cram the same texts into one vector each with the same model until every text reaches
teacher-forced accuracy >= 0.99, or its step budget ends. The paper's protocol (`anchor`: AdamW
lr 1e-2, betas 0.9/0.9, weight decay 0.01, constant lr, vectors first) loads the model afresh for
every text and optimises it alone, as the paper's training script does; the default (`fast` in
config/config.yaml: BOS before the vector, warm-up and cosine decay, lr 0.3) loads the model once
and optimises all texts as one batch, and keeps going past 0.99 until its logit margin is reached,
so its time is an upper bound on its time to 0.99. Printed: each protocol's wall time, the steps
each text took, and the ratio.

Needs the prepared model and corpus of the embedded default; from a fresh clone:

    snakemake --cores 2 resources/models/SmolLM2-135M resources/data/embedded_prose.parquet
    python benchmarks/cramming_speed.py
"""

import argparse
import sys
import time
from pathlib import Path

import torch
import yaml
from snakemake.utils import validate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from soft_tokens.core.models import load_model  # noqa: E402
from soft_tokens.core.optimiser import optimise_prefixes, optimise_with_restarts  # noqa: E402
from soft_tokens.cramming.job import initial_vectors, optim_settings, task_for  # noqa: E402
from soft_tokens.data.corpora import cramming_samples, read_corpus  # noqa: E402
from soft_tokens.workflow import job_params  # noqa: E402

PREPARE = "snakemake --cores 2 resources/models/SmolLM2-135M resources/data/embedded_prose.parquet"


def params(config: dict, optimizer: str, args) -> dict:
    """A cram job's parameters for `optimizer`, as the workflow would pass them, at the benchmark's size."""
    wildcards = dict(model=args.model, corpus=args.corpus, length=str(args.length), n_mem="1", variant="base",
                     init="randn", optimizer=optimizer)
    p = job_params(config, "cram", wildcards)
    p["optimizer_settings"]["stop_accuracy"] = min(p["optimizer_settings"]["stop_accuracy"], 0.99)
    p.update(n_samples=args.n_samples, device=args.device, dtype=args.dtype)
    return p


def tasks_for(model, tokenizer, p: dict, corpus: Path) -> list:
    embedding = model.get_input_embeddings().weight
    samples = cramming_samples(read_corpus(corpus), tokenizer, p["n_samples"], p["length"], False, p["seed"], p["corpus"])
    return [task_for(s["sample_id"], torch.tensor(s["input_ids"]), initial_vectors(p, embedding, s["sample_id"]), p)[0]
            for s in samples]


def synchronize(device: str) -> None:
    if torch.cuda.is_available() and device != "cpu":
        torch.cuda.synchronize()


def paper_protocol(model_dir: Path, corpus: Path, p: dict, budget: int) -> tuple[float, list]:
    """One text at a time, the model loaded afresh for each, as the paper's script runs."""
    synchronize(p["device"])
    start = time.perf_counter()
    results = []
    model, tokenizer = load_model(model_dir, p["device"], p["dtype"])
    for task in tasks_for(model, tokenizer, p, corpus):
        model, _ = load_model(model_dir, p["device"], p["dtype"])
        optimise_prefixes(model, [task], optim_settings({**p, "batch_size": 1}, budget, budget), results.append,
                          "paper protocol")
    synchronize(p["device"])
    return time.perf_counter() - start, results


def batched(model_dir: Path, corpus: Path, p: dict) -> tuple[float, list]:
    """All texts in one batch, the model loaded once, restarts as the protocol sets them."""
    synchronize(p["device"])
    start = time.perf_counter()
    results = []
    model, tokenizer = load_model(model_dir, p["device"], p["dtype"])
    embedding = model.get_input_embeddings().weight
    optimise_with_restarts(model, tasks_for(model, tokenizer, p, corpus),
                           optim_settings({**p, "batch_size": p["n_samples"]}, p["max_steps"], p["patience"]),
                           p["optimizer_settings"]["restarts"],
                           lambda key, attempt, _: initial_vectors(p, embedding, key, attempt), results.append, "default")
    synchronize(p["device"])
    return time.perf_counter() - start, results


def describe(name: str, seconds: float, results: list) -> str:
    reached = sum(r.best_accuracy >= 0.99 for r in results)
    steps = ", ".join(str(r.steps) for r in sorted(results, key=lambda r: r.key))
    return (f"{name:<34} {seconds:8.1f} s   {reached}/{len(results)} texts at TF >= 0.99   "
            f"steps per text: {steps}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    parser.add_argument("--model", default="SmolLM2-135M")
    parser.add_argument("--corpus", default="embedded_prose")
    parser.add_argument("--optimizer", default="fast", help="the new protocol, from cramming.optimizer_settings")
    parser.add_argument("--n-samples", type=int, default=4)
    parser.add_argument("--length", type=int, default=16)
    parser.add_argument("--paper-steps", type=int, default=1000,
                        help="step budget per text of the paper's protocol (its script allows 5000)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    model_dir = ROOT / "resources" / "models" / args.model
    corpus = ROOT / "resources" / "data" / f"{args.corpus}.parquet"
    for path in (model_dir, corpus):
        if not path.exists():
            sys.exit(f"{path.relative_to(ROOT)} is missing; prepare it once with:\n    {PREPARE}")
    config = yaml.safe_load(args.config.read_text())
    validate(config, str(ROOT / "config" / "schema.yaml"))
    torch.set_num_threads(config["threads"])

    paper = params(config, "anchor", args)
    default = params(config, args.optimizer, args)
    paper_seconds, paper_results = paper_protocol(model_dir, corpus, paper, args.paper_steps)
    fast_seconds, fast_results = batched(model_dir, corpus, default)

    print(f"{args.model}, {args.n_samples} texts x {args.length} tokens, one vector each, "
          f"{torch.get_num_threads()} threads")
    print(describe("paper protocol (anchor), one at a time", paper_seconds, paper_results))
    print(describe(f"{args.optimizer}, batched", fast_seconds, fast_results))
    all_reached = all(r.best_accuracy >= 0.99 for r in paper_results)
    bound = "" if all_reached else " (at least: the paper's protocol ran out of steps before every text reached 0.99)"
    print(f"time to TF >= 0.99, paper protocol / {args.optimizer}: {paper_seconds / fast_seconds:.1f}x{bound}")


if __name__ == "__main__":
    main()
