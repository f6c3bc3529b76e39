"""What config/paper.yaml costs on GPUs, projected before submitting it: GPU-hours per job kind and per
track, and whether each job fits one GPU's memory and the SLURM `runtime` it declares.

    python benchmarks/paper_cost.py                          # H100 80 GB, 40% of bf16 peak
    python benchmarks/paper_cost.py --bandwidth-tbs 4.8 --gpu-gb 141      # H200 (same compute peaks)

A projection, not a measurement: FLOPs and bytes per job come from each paper model's published
configuration (MODELS, from its config.json on the hub) and the grid and budgets of paper.yaml;
dense work runs at `--mfu` of the GPU's bf16 peak, a decoded token costs at least one read of the
weights at the memory bandwidth. Budgets are the configured maxima (every cramming text runs all
its steps, capacity searches run their widest bisection), so the hours are upper bounds for those
tracks. Dataset sizes and mean sequence lengths the config does not state are written in DATA.
"""

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LATENT = ("coconut", "pause", "coconut_nocurriculum")  # the Coconut methods that train latent stages
COCONUT_METHODS = ("nocot", "cot", *LATENT)


@dataclass(frozen=True)
class Arch:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool
    gated_mlp: bool = True  # Llama / Qwen2: gate, up, down; GPT-2: two matrices

    def params(self) -> int:
        head_dim = self.hidden // self.heads
        attn = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_heads * head_dim
        mlp = (3 if self.gated_mlp else 2) * self.hidden * self.intermediate
        return self.layers * (attn + mlp) + self.vocab * self.hidden * (1 if self.tied else 2)

    def body(self) -> int:
        """Parameters a token's forward touches besides the embedding lookup (the head included)."""
        return self.params() - (self.vocab * self.hidden if not self.tied else 0)


# Each paper model's config.json (hidden_size, num_hidden_layers, num_attention_heads,
# num_key_value_heads, intermediate_size, vocab_size, tie_word_embeddings).
MODELS = {
    "gpt2": Arch(768, 12, 12, 12, 3072, 50257, True, gated_mlp=False),
    "Llama-3.2-1B": Arch(2048, 16, 32, 8, 8192, 128256, True),
    "Llama-3.2-3B": Arch(3072, 28, 24, 8, 8192, 128256, True),
    "Llama-3.1-8B": Arch(4096, 32, 32, 8, 14336, 128256, False),
    "DeepSeek-R1-Distill-Qwen-1.5B": Arch(1536, 28, 12, 2, 8960, 151936, False),
    "Qwen2.5-1.5B-Instruct": Arch(1536, 28, 12, 2, 8960, 151936, True),
}
# What paper.yaml does not say: problems per split and mean tokens per part (GSM8k-Aug: Deng et al.'s
# 385,620 / 500 / 1,319; ProsQA 17,886 / 300 / 500; ProntoQA 9,000 / 200 / 800, its tokens counted by
# SmolLM2's tokenizer on 200 generated problems; GSM8k 7,473 / 1,319), and the converter's corpus.
DATA = {
    "gsm8k_aug": {"train": 385_620, "test": 1_319, "question": 60, "steps": 40, "answer": 5},
    "prosqa": {"train": 17_886, "test": 500, "question": 380, "steps": 30, "answer": 10},
    "prontoqa": {"train": 9_000, "test": 800, "question": 200, "steps": 80, "answer": 1},
    "gsm8k": {"train": 7_473, "test": 1_319, "question": 90, "steps": 130, "answer": 5},
    "converter_tokens": 1_000_000,
}


def sequence_tokens(data: dict) -> int:
    """Tokens of one training sequence: question, steps and answer."""
    return data["question"] + data["steps"] + data["answer"]


def dense_seconds(flops: float, gpu, fp32: bool = False) -> float:
    """Dense work at `mfu` of the bf16 peak, or of the float32 peak (no tensor cores: PyTorch leaves
    TF32 off for matmuls by default)."""
    return flops / ((gpu.fp32_tflops if fp32 else gpu.peak_tflops) * 1e12 * gpu.mfu)


def decode_seconds(arch: Arch, rows: int, tokens: int, gpu) -> float:
    """`tokens` decoding steps at batch `rows`: compute-bound or one weight read per step, the larger."""
    per_step = max(2 * arch.body() * rows / (gpu.peak_tflops * 1e12 * gpu.mfu),
                   2 * arch.params() / (gpu.bandwidth_tbs * 1e12))
    return per_step * tokens


def training_memory_gb(arch: Arch, tokens: int, full: bool, fp32: bool = False) -> float:
    """Weights (+ gradients and AdamW moments when every weight trains), activations kept for the
    backward (34 bytes per token, layer and hidden unit in bf16: Korthikanti et al. 2022, no
    recomputation) and float32 logits."""
    width = 4 if fp32 else 2
    weights = arch.params() * (width + (width + 8 if full else 0))
    activations = 34 * tokens * arch.layers * arch.hidden * (2 if fp32 else 1)
    return (weights + activations + 4 * tokens * arch.vocab) / 1e9


def jobs(config: dict, gpu) -> list[dict]:
    """One row per job of the grid: track, kind, hours, GPU memory, declared runtime (hours)."""
    rows = []

    def add(track, kind, model, hours, memory, runtime_min, count=1):
        rows.append({"track": track, "kind": kind, "model": model, "count": count, "hours": hours,
                     "memory_gb": memory, "runtime_h": runtime_min / 60 if runtime_min else None})

    cram = config["cramming"]
    for model in cram["models"]:
        arch, over = MODELS[model], cram.get("overrides", {}).get(model, {})
        length, batch = over.get("lengths", cram["lengths"])[0], over.get("batch_size", cram["batch_size"])
        runtime = over.get("runtime", cram.get("runtime"))
        tokens, batches = batch * (length + 2), math.ceil(cram["n_samples"] / batch)
        for opt in cram["optimizers"]:
            steps = cram["optimizer_settings"][opt].get("max_steps") or cram["max_steps"]
            # Frozen weights: the backward computes input gradients only, about one more forward.
            hours = batches * steps * dense_seconds(4 * arch.body() * tokens, gpu) / 3600
            add("cramming", f"cram ({opt})", model, hours, training_memory_gb(arch, tokens, False), runtime,
                len(cram["variants"]))
        cap = cram["capacity"]
        stages = math.ceil(math.log2(cap["max_length"] / cap["start_length"])) + \
            math.ceil(math.log2(cap["max_length"] / 2 / cap["resolution"]))
        tokens = batch * cap["max_length"]  # capacity batches its texts as cram does
        hours = math.ceil(cap["n_samples"] / batch) * stages * cap["stage_steps"] * \
            dense_seconds(4 * arch.body() * tokens, gpu) / 3600
        add("capacity", "capacity search (upper bound)", model, hours, training_memory_gb(arch, tokens, False),
            runtime, len(cap["optimizers"]) * len(cap["variants"]))

    conv = config["converter"]
    for model in conv["models"]:
        arch = MODELS[model]
        hours = dense_seconds(2 * arch.body() * DATA["converter_tokens"], gpu) / 3600
        add("converter", "extract pairs", model, hours, 2 * arch.params() / 1e9, None)

    est, comp = config["estar"], config["compressor"]
    for model in est["models"]:
        arch = MODELS[model]
        tokens = est["batch_size"] * (est["k"] + est["follow_len"])
        steps = math.ceil(est["estar_train_contexts"] / est["batch_size"]) * est["max_steps"]
        add("estar", "e* optimisation", model, steps * dense_seconds(4 * arch.body() * tokens, gpu) / 3600,
            training_memory_gb(arch, tokens, False), None)
        per_epoch = est["train_contexts"] * (est["k"] + 2 * est["follow_len"] + est["ctx_len"])
        hours = comp["epochs"] * dense_seconds(4 * arch.body() * per_epoch, gpu) / 3600
        add("compressor", "compressor training", model, hours,
            training_memory_gb(arch, comp["batch_size"] * (est["ctx_len"] + est["follow_len"]), False), None,
            len(comp["archs"]))

    coco = config["coconut"]
    fp32 = coco.get("dtype") == "float32"
    seeds = len(coco.get("seeds", [config["seed"]]))

    def coconut_training(model, dataset, methods, track, runs=seeds):
        """Each of `methods` trained on `dataset` with the Coconut section's settings for it: full
        fine-tuning (forward and backward for inputs and weights, 3 forwards), every epoch of the
        schedule (a latent method started from the CoT model skips CoT's first stage)."""
        arch, settings, data = MODELS[model], {**coco, **coco.get("overrides", {}).get(dataset, {})}, DATA[dataset]
        length = sequence_tokens(data)
        for method in methods:
            skipped = settings["epochs_per_stage"] if settings.get("start") == "cot" and method in LATENT else 0
            train = (settings["num_epochs"] - skipped) * data["train"] * length
            add(track, f"train {method} ({dataset})", model, dense_seconds(6 * arch.body() * train, gpu, fp32) / 3600,
                training_memory_gb(arch, settings["batch_size"] * length, True, fp32), coco.get("runtime"), runs)
        return settings, data

    for model in coco["models"]:
        for dataset in coco["datasets"]:
            settings, data = coconut_training(model, dataset, COCONUT_METHODS, "coconut")
            arch, new = MODELS[model], settings["max_new_tokens"]
            hours = decode_seconds(arch, settings["eval_batch_size"], new, gpu) * data["test"] / \
                settings["eval_batch_size"] * (1 + len(coco.get("controls", []))) / 3600
            add("coconut", f"evaluate ({dataset})", model, hours, 4 * arch.params() / 1e9, None,
                len(COCONUT_METHODS) * seeds)

    pool = config["pooler"]
    for model in pool["models"]:
        arch = MODELS[model]
        for dataset in pool["datasets"]:
            if pool["main"] == "cot":  # the main model: this model fine-tuned by the Coconut track's CoT (one seed)
                coconut_training(model, dataset, ("cot",), "pooler", runs=1)
            data = DATA[dataset]
            length = sequence_tokens(data)
            examples = pool["epochs"] * data["train"] * pool["max_prefixes"]
            hours = dense_seconds(4 * arch.body() * examples * length, gpu) / 3600  # LoRA: no weight gradients
            # The main LM and the pooler's copy of it both hold float32 weights (pooler.dtype is an autocast):
            # 8 bytes a parameter, where training_memory_gb counts the 2 of one bf16 copy.
            add("pooler", f"train ({dataset})", model, hours,
                training_memory_gb(arch, pool["batch_size"] * length, False) + 6 * arch.params() / 1e9,
                pool.get("runtime"), len(pool["windows"]))
            hours = decode_seconds(arch, pool["eval_batch_size"], pool["max_new_tokens"], gpu) * \
                data["test"] / pool["eval_batch_size"] / 3600
            add("pooler", f"evaluate ({dataset})", model, hours, 8 * arch.params() / 1e9, None,
                len(pool["windows"]) + 1)

    rl = config["hrpo"]
    for model in rl["models"]:
        arch = MODELS[model]
        for dataset in rl["datasets"]:
            data = DATA[dataset]
            rows_per_step = rl["prompts_per_step"] * rl["group_size"]
            rollout = decode_seconds(arch, rows_per_step, rl["max_new_tokens"], gpu)
            tokens = rows_per_step * (data["question"] + rl["max_new_tokens"])
            update = dense_seconds((4 + 2) * arch.body() * tokens, gpu)  # policy forward+backward, reference forward
            hours = rl["steps"] * (rollout + update) / 3600
            add("hrpo", f"train ({dataset})", model, hours,
                training_memory_gb(arch, tokens, False), rl.get("runtime"),
                len(rl["methods"]) * len(rl["seeds"]))
            hours = decode_seconds(arch, rl["eval_batch_size"], rl["max_new_tokens"], gpu) * \
                data["test"] / rl["eval_batch_size"] / 3600
            add("hrpo", f"evaluate ({dataset})", model, hours, 2 * arch.params() / 1e9, None,
                (len(rl["methods"]) + 1) * len(rl["seeds"]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "paper.yaml")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100 SXM: 989)")
    parser.add_argument("--fp32-tflops", type=float, default=67.0, help="float32 dense peak (H100 SXM: 67)")
    parser.add_argument("--bandwidth-tbs", type=float, default=3.35, help="memory bandwidth (H100 SXM: 3.35)")
    parser.add_argument("--gpu-gb", type=float, default=80.0)
    parser.add_argument("--mfu", type=float, default=0.4, help="share of the peak dense work reaches")
    gpu = parser.parse_args()
    config = yaml.safe_load(gpu.config.read_text())
    rows = jobs(config, gpu)
    print(f"{gpu.config.name}: projected at {gpu.mfu:.0%} of {gpu.peak_tflops:g} TFLOPS (bf16) / {gpu.fp32_tflops:g} "
          f"(float32), {gpu.bandwidth_tbs:g} TB/s, "
          f"{gpu.gpu_gb:g} GB per GPU (an estimate from FLOPs and bytes, not a measurement)\n")
    print(f"{'track':<11} {'job':<32} {'model':<30} {'jobs':>4} {'h/job':>8} {'GB':>6}  fits")
    for r in rows:
        over = ["memory"] if r["memory_gb"] > gpu.gpu_gb else []
        if r["runtime_h"] is not None and r["hours"] > r["runtime_h"]:
            over.append(f"runtime {r['runtime_h']:g} h")
        verdict = "NO: " + ", ".join(over) if over else "yes"
        print(f"{r['track']:<11} {r['kind']:<32} {r['model']:<30} {r['count']:>4} {r['hours']:>8.2f} "
              f"{r['memory_gb']:>6.1f}  {verdict}")
    totals: dict[str, float] = {}
    for r in rows:
        totals[r["track"]] = totals.get(r["track"], 0.0) + r["hours"] * r["count"]
    print("\nGPU-hours per track: " + ", ".join(f"{t} {h:,.1f}" for t, h in totals.items()) +
          f"; total {sum(totals.values()):,.0f}")


if __name__ == "__main__":
    main()
