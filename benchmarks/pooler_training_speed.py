"""Pooler training throughput: batched examples vs batch 1 with gradient accumulation.

The public attempt trained its pooler one example at a time. Both runs here take the same optimiser
steps over the same examples (`--batch-size` examples a step: one batch, or that many batches of one
accumulated; their gradients are equal, tests/test_pooler.py), one epoch each, and print training
problems per second and the ratio. The main LM is the prepared model; W is `--window`.

    python benchmarks/pooler_training_speed.py --model-dir resources/models/SmolLM2-135M
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from soft_tokens.core.models import model_dir_arg  # noqa: E402
from soft_tokens.data.reasoning import prosqa_problem  # noqa: E402
from soft_tokens.latent.coconut.method import tokenize_problem  # noqa: E402
from soft_tokens.latent.pooler.training import build_pooler, init_windows, load_main, train_pooler, training_examples  # noqa: E402

SETTINGS = dict(seed=1337, lora_r=16, lora_alpha=32, lora_dropout=0.0, pooling="mean", output_scale=True,
                context=False, init_token="<<", compress_fraction=1.0, max_prefixes=1, lr=1e-3, weight_decay=0.0,
                epochs=1, lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                               "down_proj"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=model_dir_arg, default="resources/models/SmolLM2-135M")
    parser.add_argument("--n-problems", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()

    s = {**SETTINGS, "device": args.device, "dtype": args.dtype}
    model, tokenizer, ids = load_main(args.model_dir, s)
    rng = np.random.default_rng(0)
    problems = [tokenize_problem(tokenizer, **prosqa_problem(rng, 6, 2, {2: 1, 3: 1}, 2))
                for _ in range(args.n_problems)]
    examples = training_examples(problems, args.window, s, ids)
    rates = {}
    for name, batch, accumulation in (("batched", args.batch_size, 1), ("batch 1, accumulated", 1, args.batch_size)):
        pooler = build_pooler(args.model_dir, model, tokenizer, ids, s, init_windows(examples))
        run = {**s, "batch_size": batch, "grad_accumulation": accumulation}
        with tempfile.TemporaryDirectory() as tmp:
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            train_pooler(model, pooler, examples, ids, run, Path(tmp) / "checkpoint.pt", {"benchmark": name})
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            rates[name] = len(examples) / (time.perf_counter() - start)
        print(f"{name:>22}: {rates[name]:.2f} problems/s ({len(examples)} problems, W = {args.window}, "
              f"{args.batch_size} per optimiser step, {model.device})")
    print(f"ratio batched / batch 1: {rates['batched'] / rates['batch 1, accumulated']:.2f}x")


if __name__ == "__main__":
    main()
