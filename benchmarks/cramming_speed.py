"""Time to converge: our cramming optimiser against the seed's protocol, both batched.

Both cram the same texts (the first tokens of each passage) into one vector each with the same model
until every text reaches teacher-forced accuracy >= 0.99, or its step budget ends. The seed's
protocol (`seed`: uniform init, AdamW lr 1e-2, betas 0.9/0.9, weight decay 0.01, cosine to 1e-3,
vectors first, the model in bf16; docs/cramming.md) runs with its budget here (--seed-steps, its
cosine spanning it); ours (`fast` in config/config.yaml: BOS before the vector, warm-up and cosine
decay, lr 3) keeps going past 0.99 until its logit margin is reached, so its time is an upper bound
on its time to 0.99. Printed: each protocol's wall time, the steps each text took, and the ratio.

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
from soft_tokens.core.optimiser import optimise_with_restarts  # noqa: E402
from soft_tokens.cramming.job import initial_vectors, model_dtype, optim_settings, task_for  # noqa: E402
from soft_tokens.cramming.spec import Cram, cram_settings, protocol_inits  # noqa: E402
from soft_tokens.data.corpora import cramming_samples, read_corpus  # noqa: E402
from soft_tokens.workflow import job_params  # noqa: E402

PREPARE = "snakemake --cores 2 resources/models/SmolLM2-135M resources/data/embedded_prose.parquet"


def job_settings(config: dict, optimizer: str, args, max_steps: int | None = None) -> Cram:
    """A cram job's settings for `optimizer`, as the workflow would build them, at the benchmark's size."""
    init = protocol_inits(cram_settings(config, args.model), optimizer)[0]
    wildcards = dict(model=args.model, corpus=args.corpus, length=str(args.length), n_mem="1", variant="base",
                     init=init, optimizer=optimizer)
    p = job_params(config, "cram", wildcards)
    p["optimizer_settings"]["stop_accuracy"] = min(p["optimizer_settings"]["stop_accuracy"], 0.99)
    p.update(n_samples=args.n_samples, device=args.device, dtype=args.dtype, batch_size=args.n_samples)
    if max_steps is not None:
        p.update(max_steps=max_steps, patience=max_steps)
    return Cram.build(p)


def synchronize(device: str) -> None:
    if torch.cuda.is_available() and device != "cpu":
        torch.cuda.synchronize()


def batched(model_dir: Path, corpus: Path, settings: Cram) -> tuple[float, list]:
    """All texts in one batch, the model loaded once, restarts as the protocol sets them."""
    synchronize(settings.device)
    start = time.perf_counter()
    results = []
    model, tokenizer = load_model(model_dir, settings.device, model_dtype(settings))
    embedding = model.get_input_embeddings().weight
    samples = cramming_samples(read_corpus(corpus), tokenizer, settings.n_samples, settings.length, False,
                               settings.seed, settings.corpus, span=settings.optimizer_settings["text"])
    tasks = [task_for(s["sample_id"], torch.tensor(s["input_ids"]),
                      initial_vectors(settings, embedding, s["sample_id"]), settings)[0] for s in samples]
    optimise_with_restarts(model, tasks, optim_settings(settings, settings.max_steps, settings.patience),
                           settings.optimizer_settings["restarts"],
                           lambda key, attempt, _: initial_vectors(settings, embedding, key, attempt), results.append,
                           settings.optimizer)
    synchronize(settings.device)
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
    parser.add_argument("--optimizer", default="fast", help="our protocol, from cramming.optimizer_settings")
    parser.add_argument("--n-samples", type=int, default=4)
    parser.add_argument("--length", type=int, default=16)
    parser.add_argument("--seed-steps", type=int, default=1500,
                        help="step budget per text of the seed's protocol (its script runs 5000)")
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

    seed_seconds, seed_results = batched(model_dir, corpus, job_settings(config, "seed", args, args.seed_steps))
    fast_seconds, fast_results = batched(model_dir, corpus, job_settings(config, args.optimizer, args))

    print(f"{args.model}, {args.n_samples} texts x {args.length} tokens, one vector each, "
          f"{torch.get_num_threads()} threads")
    print(describe("seed protocol, batched", seed_seconds, seed_results))
    print(describe(f"{args.optimizer}, batched", fast_seconds, fast_results))
    all_reached = all(r.best_accuracy >= 0.99 for r in seed_results)
    bound = "" if all_reached else " (at least: the seed's protocol ran out of steps before every text reached 0.99)"
    print(f"time to TF >= 0.99, seed protocol / {args.optimizer}: {seed_seconds / fast_seconds:.1f}x{bound}")


if __name__ == "__main__":
    main()
