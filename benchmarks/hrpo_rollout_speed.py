"""HRPO rollout throughput: batched hybrid generation on a KV cache vs one sequence at a time.

Both runs sample the same completions (`--prompts` ProsQA-style prompts x `--group` each, the gate
blending with the `probs` thinking state) and print generated tokens per second and the ratio; the
batched run reads each prompt once and shares its cache over the group.

    python benchmarks/hrpo_rollout_speed.py --model-dir resources/models/SmolLM2-135M
"""

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from soft_tokens.core.models import model_dir_arg  # noqa: E402
from soft_tokens.data.reasoning import prosqa_problem  # noqa: E402
from soft_tokens.latent.hrpo.rollout import left_pad, rollout  # noqa: E402
from soft_tokens.latent.hrpo.spec import TrainHrpo  # noqa: E402
from soft_tokens.latent.hrpo.training import build_policy  # noqa: E402
from decode_speed import settings_of  # noqa: E402


def timed(run, device) -> tuple[float, int]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    tokens = run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=model_dir_arg, default="resources/models/SmolLM2-135M")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    settings = replace(settings_of(TrainHrpo, "train_hrpo", {"policy": "probs", "seed": "1337"}, args.model_dir.name),
                       device=args.device)
    policy, tokenizer = build_policy(args.model_dir, "probs", settings)
    device = policy.embedding_rms.device
    rng = np.random.default_rng(0)
    questions = [tokenizer(prosqa_problem(rng, 6, 2, {2: 1, 3: 1}, 2)["question"] + "\n",
                           add_special_tokens=False).input_ids
                 for _ in range(args.prompts)]

    def sample(prompts, group, seed):
        ro = rollout(policy, tokenizer, left_pad(prompts, device), group, args.max_new_tokens, 1.0, "###", seed)
        # Tokens of the completions themselves (through EOS): a batch's rows that end early keep
        # decoding until the longest ends, and that waste counts against the batched run.
        return int(ro.lengths.sum())

    sample(questions[:1], 1, 0)  # warm-up
    rates = {}
    seconds, tokens = timed(lambda: sample(questions, args.group, 1), device)
    rates["batched"] = tokens / seconds
    seconds, tokens = timed(lambda: sum(sample([q], 1, 100 * i + g) for i, q in enumerate(questions)
                                        for g in range(args.group)), device)
    rates["one at a time"] = tokens / seconds
    for name, rate in rates.items():
        print(f"{name:>14}: {rate:.1f} tokens/s ({args.prompts} prompts x {args.group}, device {device.type})")
    print(f"batched / one at a time: {rates['batched'] / rates['one at a time']:.2f}x")


if __name__ == "__main__":
    main()
