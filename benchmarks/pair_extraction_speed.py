"""Pair extraction throughput: tokens batched per forward vs one token per forward.

    python benchmarks/pair_extraction_speed.py --model-dir resources/models/SmolLM2-135M
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from soft_tokens.compression.converter import extract_pairs, token_subset  # noqa: E402
from soft_tokens.core.models import load_model, model_dir_arg  # noqa: E402


def tokens_per_second(model, ids, layers, bos, batch_size) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    extract_pairs(model, ids, layers, bos, batch_size)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return len(ids) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=model_dir_arg, default="resources/models/SmolLM2-135M")
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--layers", type=int, nargs="+", default=[-1, -2])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    model, tokenizer = load_model(args.model_dir, args.device, args.dtype)
    ids = token_subset(model.config.vocab_size, args.tokens, 0)
    tokens_per_second(model, ids[: args.batch_size], args.layers, tokenizer.bos_token_id, args.batch_size)  # warm-up
    single = tokens_per_second(model, ids, args.layers, tokenizer.bos_token_id, 1)
    batched = tokens_per_second(model, ids, args.layers, tokenizer.bos_token_id, args.batch_size)
    print(f"model {args.model_dir.name} on {model.device} ({model.dtype}), {len(ids)} tokens, layers {args.layers}")
    print(f"one token per forward: {single:10.1f} tokens/s")
    print(f"batch {args.batch_size}: {batched:10.1f} tokens/s")
    print(f"speed-up: {batched / single:.2f}x")


if __name__ == "__main__":
    main()
