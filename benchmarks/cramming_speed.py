"""Batched cramming vs the one-sample-at-a-time protocol, on the same samples and step budget.

The reference protocol (as in the cramming paper's code) loads the model afresh for every sample
and optimises that sample alone. The batched optimiser loads the model once and optimises
`--batch-size` samples per forward/backward, each with its own vectors and AdamW state. Both stop
each sample by the same rules, so they do the same work (up to rounding in low precision); the
ratio compares sample-steps per second.

    python benchmarks/cramming_speed.py --model-dir resources/models/SmolLM2-135M \
        --corpus resources/data/embedded_prose.parquet
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from soft_tokens.core.models import load_model  # noqa: E402
from soft_tokens.core.optimiser import OptimSettings, PrefixTask, init_vectors, optimise_prefixes  # noqa: E402
from soft_tokens.core.seeding import generator  # noqa: E402
from soft_tokens.cramming.job import position_weights  # noqa: E402
from soft_tokens.data.corpora import cramming_samples, read_corpus  # noqa: E402


def tasks_for(model, tokenizer, args) -> list[PrefixTask]:
    embedding = model.get_input_embeddings().weight
    samples = cramming_samples(read_corpus(args.corpus), tokenizer, args.n_samples, args.length, False, 1337, "bench")
    return [
        PrefixTask(s["sample_id"], torch.tensor(s["input_ids"]), position_weights("base", args.length, 2, 3.0),
                   init_vectors("randn", embedding, 1, generator(1337, s["sample_id"])))
        for s in samples
    ]


def synchronize(device: str) -> None:
    if torch.cuda.is_available() and device != "cpu":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("resources/models/SmolLM2-135M"))
    parser.add_argument("--corpus", type=Path, default=Path("resources/data/embedded_prose.parquet"))
    parser.add_argument("--n-samples", type=int, default=8)
    parser.add_argument("--length", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    settings = dict(lr=1e-2, betas=(0.9, 0.9), weight_decay=0.01, max_steps=args.steps, patience=args.steps)

    synchronize(args.device)
    start = time.perf_counter()
    one_at_a_time = []
    model, tokenizer = load_model(args.model_dir, args.device, args.dtype)
    for task in tasks_for(model, tokenizer, args):
        model, _ = load_model(args.model_dir, args.device, args.dtype)  # the reference reloads per sample
        optimise_prefixes(model, [task], OptimSettings(batch_size=1, **settings), one_at_a_time.append, "alone")
    synchronize(args.device)
    reference = time.perf_counter() - start

    start = time.perf_counter()
    batched = []
    model, tokenizer = load_model(args.model_dir, args.device, args.dtype)
    optimise_prefixes(model, tasks_for(model, tokenizer, args),
                      OptimSettings(batch_size=args.batch_size, **settings), batched.append, "batched")
    synchronize(args.device)
    fast = time.perf_counter() - start

    ref_steps, fast_steps = sum(r.steps for r in one_at_a_time), sum(r.steps for r in batched)
    device = model.get_input_embeddings().weight.device
    print(f"model {args.model_dir.name} on {device} ({model.dtype}), {args.n_samples} samples x {args.length} "
          f"tokens, at most {args.steps} steps each")
    print(f"one at a time, model reloaded per sample: {reference:8.2f} s for {ref_steps} sample-steps")
    print(f"batched (batch {args.batch_size}), model loaded once: {fast:8.2f} s for {fast_steps} sample-steps")
    # Sample-steps per second, so a sample that converges a step earlier in one run does not skew it.
    print(f"speed-up (sample-steps/s, batched over one at a time): {(fast_steps / fast) / (ref_steps / reference):.2f}x")

if __name__ == "__main__":
    main()
