"""Every decode loop of the pipeline against a bare Hugging Face cached decode loop, at the same batch,
model and precision, and tokens/s against batch size.

    python benchmarks/decode_speed.py --model-dir resources/models/SmolLM2-135M
    python benchmarks/decode_speed.py --batches 1 4 16 50 100     # tokens/s of the bare loop per batch

The bare loop prefills the same prompts (left-padded, with their attention mask) and then feeds one
greedy token per step on the KV cache, nothing else. Each loop runs as the default config runs it: Coconut
generation (one continuous thought, then the answer) in bfloat16 autocast; the pooler's online loop under
`pooler.dtype`, splicing every W = 8 reasoning tokens with an untrained pooler; HRPO rollouts (GRPO, and HRPO with
the `probs` state) under `hrpo.dtype`, each prompt read once for its group; the cramming greedy decode
from one vector in the bfloat16 copy of the model. EOS is off, so every row decodes `--max-new-tokens`
tokens (HRPO samples at temperature 1 and stops when every row has ended). Printed: generated tokens per
second of wall time (prefill included) for the loop and for the bare loop, and their ratio. The
one-at-a-time references the loops replaced are in coconut_generation_speed.py and hrpo_rollout_speed.py.
"""

import argparse
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from soft_tokens.core.decoding import greedy_from_embeds  # noqa: E402
from soft_tokens.core.models import load_model, model_dir_arg  # noqa: E402
from soft_tokens.core.padding import pad, positions  # noqa: E402
from soft_tokens.core.training import autocast, casts_once, load_trainable  # noqa: E402
from soft_tokens.data.reasoning import prosqa_problem  # noqa: E402
from soft_tokens.latent.coconut.method import add_latent_tokens, generate, layout, tokenize_problem  # noqa: E402
from soft_tokens.latent.hrpo.rollout import left_pad, rollout  # noqa: E402
from soft_tokens.latent.hrpo.spec import TrainHrpo  # noqa: E402
from soft_tokens.latent.hrpo.training import build_policy, prompt_ids  # noqa: E402
from soft_tokens.latent.pooler import online  # noqa: E402
from soft_tokens.latent.pooler.method import add_pool_tokens  # noqa: E402
from soft_tokens.latent.pooler.spec import EvalPooler  # noqa: E402
from soft_tokens.latent.pooler.training import build_pooler  # noqa: E402
from soft_tokens.validation import validate  # noqa: E402
from soft_tokens.workflow import job_params  # noqa: E402

NO_EOS = -1
ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def bare_loop(model, prompts: list[list[int]], n_tokens: int) -> int:
    """Prefill, then `n_tokens - 1` single-token greedy steps on the KV cache (each weight cast once under
    autocast): what the loops are held to. Returns the tokens generated."""
    ids, mask = (t.to(model.device) for t in pad(prompts, left=True))
    with casts_once(model):
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=True, logits_to_keep=1)
        cache, token, position = out.past_key_values, out.logits[:, -1].argmax(-1), mask.sum(1)
        for _ in range(n_tokens - 1):
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            out = model(input_ids=token[:, None], attention_mask=mask, position_ids=position[:, None],
                        past_key_values=cache, use_cache=True)
            cache, token, position = out.past_key_values, out.logits[:, -1].argmax(-1), position + 1
    return len(prompts) * n_tokens


def rate(run) -> float:
    """Generated tokens per second of `run` (which returns how many it generated)."""
    start = time.perf_counter()
    tokens = run()
    return tokens / (time.perf_counter() - start)


def warm_rate(run, precision) -> float:
    with precision():
        run()
        return rate(run)


def settings_of(kind, rule: str, wildcards: dict, model: str):
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    validate(config, "config/config.yaml")
    return kind.build(job_params(config, rule, {"model": model, "dataset": "prosqa", **wildcards}))


def compare(name: str, ours, bare, precision, repeats: int) -> None:
    """Median tokens/s of each loop and median ratio over `repeats` rounds that run the two in turn (after
    a warm-up of each), so that a slow spell of the machine falls on both alike."""
    with precision():
        ours(), bare()
        rounds = np.array([(rate(ours), rate(bare)) for _ in range(repeats)])
    mine, reference = np.median(rounds, 0)
    ratios = rounds[:, 0] / rounds[:, 1]
    print(f"{name:<38} {mine:8.1f} {reference:8.1f} {np.median(ratios):6.2f}x  "
          f"[{ratios.min():.2f}, {ratios.max():.2f}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=model_dir_arg, default="resources/models/SmolLM2-135M")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batches", type=int, nargs="*", default=[], help="print the bare loop's tokens/s at these "
                                                                           "batch sizes instead")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="rounds of each loop against its bare loop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    B, N, name = args.batch_size, args.max_new_tokens, args.model_dir.name
    rng = np.random.default_rng(0)
    problems = [prosqa_problem(rng, 6, 2, {2: 1, 3: 1}, 2) for _ in range(max([B, *args.batches]))]
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    model, tokenizer = load_model(args.model_dir, "cpu", "float32")
    questions = [tokenizer(p["question"] + "\n", add_special_tokens=False).input_ids for p in problems]

    if args.batches:
        print(f"bare cached decode loop, {name}, float32 and bfloat16 autocast, {N} tokens per row")
        print(f"{'batch':>6} {'fp32 tok/s':>11} {'bf16 tok/s':>11}")
        for b in args.batches:
            run = lambda b=b: bare_loop(model, questions[:b], N)  # noqa: E731
            print(f"{b:>6} {warm_rate(run, nullcontext):11.1f} {warm_rate(run, bf16):11.1f}")
        return

    print(f"{name}, batch {B}, {N} tokens per row, {args.threads} threads, medians of {args.repeats} rounds")
    print(f"{'loop':<38} {'tok/s':>8} {'bare':>8} {'ratio':>7}  [min, max]")

    # Coconut: as evaluate_method runs it (the trained weights keep requires_grad: autocast casts once).
    lm, tok = load_trainable(args.model_dir, "cpu")
    lm.eval()
    ids = add_latent_tokens(lm, tok, "<<")
    prompts = [layout(tokenize_problem(tok, **p), "coconut", 1, 1, 1, ids, prompt_only=True) for p in problems[:B]]
    compare("coconut generate (bf16 autocast)", lambda: sum(len(r) for r in generate(lm, prompts, True, NO_EOS, N)),
            lambda: bare_loop(lm, [p.input_ids for p in prompts], N), bf16, args.repeats)

    # The pooler's online loop, splicing every 8 reasoning tokens, under `pooler.dtype` (each frozen weight
    # cast once per batch, as pooler.training.generated runs it).
    pooler_settings = settings_of(EvalPooler, "eval_pooler", {"window": "8"}, name)
    pool_ids = add_pool_tokens(tokenizer)
    pooler = build_pooler(args.model_dir, model, tokenizer, pool_ids, pooler_settings,
                          torch.tensor([questions[0][:8]] * 4)).eval()

    def pooled(compress: bool) -> int:
        with torch.no_grad(), casts_once(model, pooler):
            return sum(len(r.tokens) for r in online.generate(model, pooler, questions[:B], 8, pool_ids, NO_EOS,
                                                                set(), N, compress=compress))
    for compress in (False, True):
        label = f"pooler online ({'W=8' if compress else 'no pooling'}, {pooler_settings.dtype})"
        compare(label, lambda c=compress: pooled(c), lambda: bare_loop(model, questions[:B], N),
                lambda: autocast(torch.device("cpu"), pooler_settings.dtype), args.repeats)

    # HRPO rollouts: 4 completions per prompt, under hrpo.dtype.
    for method in ("grpo", "probs"):
        s = settings_of(TrainHrpo, "train_hrpo", {"policy": method, "seed": "1337"}, name)
        policy, tok = build_policy(args.model_dir, method, s)
        group = s.group_size
        read = prompt_ids(tok, [p["question"] for p in problems[:B // group]], s)
        prompts = left_pad(read, "cpu")
        ro = lambda: int(rollout(policy, tok, prompts, group, N, 1.0, s.marker, 1).tokens.numel())  # noqa: E731
        rows = [row for row in read for _ in range(group)]
        compare(f"hrpo rollout {method} ({s.dtype})", ro, lambda: bare_loop(model, rows, N),
                lambda: autocast(torch.device("cpu"), s.dtype), args.repeats)

    # Cramming: greedy from one vector, in the bfloat16 copy of the model (cramming.job.bf16_copy).
    low = model.to(torch.bfloat16)
    vectors = torch.randn(B, 1, low.config.hidden_size, dtype=torch.bfloat16) * 0.02
    compare("cramming greedy (bf16 model)", lambda: greedy_from_embeds(low, vectors, N).numel(),
            lambda: bare_loop(low, [[tokenizer.bos_token_id]] * B, N), nullcontext, args.repeats)


if __name__ == "__main__":
    main()
