"""Coconut generation: batched with a KV cache vs one problem at a time with full recomputation.

The reference decodes one problem at a time and recomputes the whole prefix for every continuous
thought and every generated token. `soft_tokens.coconut.generate` left-pads a batch so its latents
align, runs one pass per thought on the KV cache, then decodes greedily on the cache. EOS is
disabled so both make exactly `--max-new-tokens` tokens per problem; their outputs are checked
equal, and the ratio compares generated tokens per second.

    python benchmarks/coconut_generation_speed.py --model-dir resources/models/SmolLM2-135M
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from soft_tokens.core.models import load_model, model_dir_arg  # noqa: E402
from soft_tokens.data.reasoning import prosqa_problem  # noqa: E402
from soft_tokens.latent.coconut.method import add_latent_tokens, generate, layout, tokenize_problem  # noqa: E402

NO_EOS = -1


@torch.no_grad()
def recompute_one(model, prompt, max_new_tokens: int) -> list[int]:
    """The reference: batch 1, no cache; every thought and every token reruns the whole prefix."""
    ids = torch.tensor([prompt.input_ids], device=model.device)
    embeds = model.get_input_embeddings()(ids)
    for col in range(prompt.first_latent, prompt.first_latent + prompt.n_latent):
        hidden = model(inputs_embeds=embeds[:, :col], output_hidden_states=True).hidden_states[-1][:, -1]
        embeds = torch.cat([embeds[:, :col], hidden[:, None], embeds[:, col + 1:]], 1)
    tokens = []
    for _ in range(max_new_tokens):
        token = model(inputs_embeds=embeds).logits[:, -1].argmax(-1)
        tokens.append(int(token))
        embeds = torch.cat([embeds, model.get_input_embeddings()(token[:, None])], 1)
    return tokens


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=model_dir_arg, default="resources/models/SmolLM2-135M")
    parser.add_argument("--n-problems", type=int, default=16)
    parser.add_argument("--n-latent", type=int, default=4, help="continuous thoughts per problem")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32", help="float32 keeps the two outputs comparable")
    args = parser.parse_args()

    model, tokenizer = load_model(args.model_dir, args.device, args.dtype)
    ids = add_latent_tokens(model, tokenizer, "<<")
    rng = np.random.default_rng(0)
    problem = lambda: tokenize_problem(tokenizer, **prosqa_problem(rng, 6, 2, {2: 1, 3: 1}, 2))  # noqa: E731
    prompts = [layout(problem(), "coconut", args.n_latent, 1,
                      args.n_latent, ids, prompt_only=True) for _ in range(args.n_problems)]
    device = model.device

    synchronize(device)
    start = time.perf_counter()
    reference = [recompute_one(model, p, args.max_new_tokens) for p in prompts]
    synchronize(device)
    slow = time.perf_counter() - start

    start = time.perf_counter()
    batched = []
    for i in range(0, len(prompts), args.batch_size):
        batched += generate(model, prompts[i:i + args.batch_size], True, NO_EOS, args.max_new_tokens)
    synchronize(device)
    fast = time.perf_counter() - start

    same = sum(a == b for a, b in zip(reference, batched))
    tokens = args.n_problems * args.max_new_tokens
    print(f"model {args.model_dir.name} on {device} ({model.dtype}): {args.n_problems} ProsQA prompts, "
          f"{args.n_latent} thoughts + {args.max_new_tokens} tokens each")
    print(f"batch 1, recomputing the prefix: {slow:8.2f} s, {tokens / slow:9.1f} tokens/s")
    print(f"batched ({args.batch_size}) with KV cache: {fast:8.2f} s, {tokens / fast:9.1f} tokens/s")
    print(f"identical outputs: {same} of {args.n_problems}")
    print(f"speed-up (tokens/s, batched+cached over batch-1 recomputation): {slow / fast:.2f}x")


if __name__ == "__main__":
    main()
