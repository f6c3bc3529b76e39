"""Training steps of the default's shapes under the attention kernel and precision each track uses, against
the ones they replaced: seconds per step, and the ratio.

    python benchmarks/training_step_speed.py --model-dir resources/models/SmolLM2-135M

Each step is a forward and backward of SmolLM2 on the CPU:
- Coconut: a full fine-tuning step of CoT on a batch of 8 ProsQA-style problems, left-padded, under
  bfloat16 autocast (the pooler's and HRPO's updates are of this kind: left-padded, autocast);
- cramming `seed`: one vector before 16 tokens, 8 texts, the model in bfloat16, gradient to the vectors;
- cramming `fast` (8 texts of 16 tokens) and a capacity stage (4 texts of 64), the model in float32;
- e* / compressor: 2 vectors before 16 follow tokens, 16 contexts, gradient to the vectors, with the frozen LM
  in float32 (what it was) and bfloat16 (`estar.dtype`, `compressor.dtype`).
Each is timed under torch's fused attention (sdpa, the transformers default) and eager attention (what
core.training.eager_attention_on_cpu switches to for training steps on the CPU), the settings alternated
so that a drift of the machine hits both. Printed: median seconds per step and the ratio to the old setting.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from soft_tokens.core.models import load_model, model_dir_arg  # noqa: E402
from soft_tokens.core.optimiser import weighted_loss_and_accuracy  # noqa: E402
from soft_tokens.core.prefix import prefix_forward  # noqa: E402
from soft_tokens.core.training import autocast, load_trainable  # noqa: E402
from soft_tokens.data.reasoning import prosqa_problem  # noqa: E402
from soft_tokens.latent.coconut.method import (add_latent_tokens, batch_loss, collate, layout,  # noqa: E402
                                              tokenize_problem)

CPU = torch.device("cpu")


def seconds(step, model, attention: str, repeats: int) -> list[float]:
    model.set_attn_implementation(attention)
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def compare(name: str, settings: dict, rounds: int, repeats: int) -> None:
    """settings: label -> (step, model, attention), the first the old setting; rounds alternate them."""
    times = {label: [] for label in settings}
    for _ in range(rounds):
        for label, (step, model, attention) in settings.items():
            times[label] += seconds(step, model, attention, repeats)
    old = statistics.median(times[next(iter(settings))])
    for label, t in times.items():
        print(f"{name:<22} {label:<24} {statistics.median(t):7.3f} s  {old / statistics.median(t):5.2f}x")


def prefix_step(model, n_vectors: int, n_texts: int, n_tokens: int):
    """One step of the batched prefix optimiser (cramming, e*; the compressor's step is this one through its
    net): vectors before the text, teacher-forced loss, gradient to the vectors."""
    ids = torch.randint(0, model.config.vocab_size, (n_texts, n_tokens), generator=torch.Generator().manual_seed(0))
    vectors = torch.rand(n_texts, n_vectors, model.config.hidden_size)

    def step():
        v = vectors.clone().requires_grad_(True)
        loss, _ = weighted_loss_and_accuracy(prefix_forward(model, v, ids)["logits"], ids, torch.ones(ids.shape))
        loss.sum().backward()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=model_dir_arg, default="resources/models/SmolLM2-135M")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.model_dir.name}, {args.threads} threads; median of {args.rounds} x {args.repeats} steps each")

    lm, tok = load_trainable(args.model_dir, "cpu")
    ids = add_latent_tokens(lm, tok, "<<")
    rng = np.random.default_rng(0)
    problems = [tokenize_problem(tok, **prosqa_problem(rng, 6, 2, {2: 1, 3: 1}, 2)) for _ in range(8)]
    batch = collate([layout(p, "cot", 0, 1, 1, ids) for p in problems])

    def coconut_step():
        with autocast(CPU, "bfloat16"):
            loss = batch_loss(lm, batch, False)
        loss.backward()
        lm.zero_grad(set_to_none=True)
    compare("coconut cot step", {"sdpa (was)": (coconut_step, lm, "sdpa"), "eager": (coconut_step, lm, "eager")},
            args.rounds, args.repeats)

    bf16, _ = load_model(args.model_dir, "cpu", "bfloat16")
    fp32, _ = load_model(args.model_dir, "cpu", "float32")
    seed = prefix_step(bf16, 1, 8, 16)
    compare("cramming seed step", {"sdpa (was)": (seed, bf16, "sdpa"), "eager": (seed, bf16, "eager")},
            args.rounds, args.repeats)
    fast, search = prefix_step(fp32, 1, 8, 16), prefix_step(fp32, 1, 4, 64)
    compare("cramming fast step", {"sdpa (was)": (fast, fp32, "sdpa"), "eager": (fast, fp32, "eager")},
            args.rounds, args.repeats)
    compare("capacity step, 64 tok", {"sdpa (was)": (search, fp32, "sdpa"), "eager": (search, fp32, "eager")},
            args.rounds, args.repeats)
    estar32, estar16 = prefix_step(fp32, 2, 16, 16), prefix_step(bf16, 2, 16, 16)
    compare("e*/compressor step", {"float32, sdpa (was)": (estar32, fp32, "sdpa"),
                                   "bfloat16, sdpa": (estar16, bf16, "sdpa"),
                                   "bfloat16, eager": (estar16, bf16, "eager")}, args.rounds, args.repeats)


if __name__ == "__main__":
    main()
