"""Training helpers every track shares: the epoch loop with per-epoch checkpoints, the policy for
non-finite losses, mixed precision and LoRA.

Non-finite losses, one policy: a run that trains one network (converter, compressor, Coconut)
stops with `FloatingPointError` naming the key to change, keeping what it finished (epochs, stages)
and never saving NaN/inf weights as finished;
an optimisation of many independent samples (cramming, e*) fails that sample alone, records its
status and reason, and leaves it out of every mean.

Checkpoints carry the fingerprint of the run (its parameters and inputs): a killed run resumes at
the epoch after the last one saved, a run with other settings or data starts over.
"""

import json
import logging
import math
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from soft_tokens.core.curves import TrainingCurve
from soft_tokens.core.io import atomic_dir, atomic_path, read_json, verified
from soft_tokens.core.job_settings import Lora
from soft_tokens.core.models import prepared_model, resolve_device, resolve_dtype
from soft_tokens.core.phases import phase
from soft_tokens.core.seeding import generator
from soft_tokens.core.tensor_files import torch_load

log = logging.getLogger(__name__)


def check_finite(loss: torch.Tensor | float, where: str, fix: str) -> None:
    """Stop a training run at a NaN/inf loss, saying where and what to change."""
    value = loss.item() if torch.is_tensor(loss) else loss
    if not math.isfinite(value):
        raise FloatingPointError(f"{where}: loss is {value}; {fix}")


def check_finite_weights(net: torch.nn.Module, where: str, fix: str) -> None:
    """Stop before weights an update made NaN/inf are saved as finished work: the loss of the step
    that broke them was still finite, so the loss check alone lets them through."""
    bad = [name for name, p in net.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise FloatingPointError(f"{where}: {len(bad)} weight tensors hold NaN/inf ({bad[0]}, ...); {fix}")


class TrainedOnly(torch.nn.Module):
    """A module whose state dict holds only its trained weights (requires_grad): the frozen rest is
    rebuilt from the model it was made from, so checkpoints stay a fraction of the model's size."""

    def trained_names(self) -> set[str]:
        return {name for name, p in self.named_parameters() if p.requires_grad}

    def state_dict(self, *args, **kwargs):
        trained = self.trained_names()
        return {k: v for k, v in super().state_dict(*args, **kwargs).items() if k in trained}

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        missing = self.trained_names() - set(state)
        if strict and missing:
            raise KeyError(f"{type(self).__name__} checkpoint lacks trained weights {sorted(missing)[:3]}...")
        return super().load_state_dict(state, strict=False, assign=assign)


# A trained LoRA's artefact: PEFT's adapter folder, the other trained weights, and what the loader checks.
ADAPTER, TRAINED, META = "adapter", "trained.safetensors", "meta.json"


@phase("save")
def save_trained(net: TrainedOnly, lora, folder: Path, meta: dict) -> None:
    """`net`'s trained weights as a standard artefact in `folder`: its LoRA (`lora`, the peft model
    inside it) as a PEFT adapter that `PeftModel.from_pretrained(base, folder / "adapter")` loads, the
    rest of them (a gate, a projection, a trained embedding table, a scale) in trained.safetensors,
    and `meta` in meta.json."""
    from safetensors.torch import save_file

    with atomic_dir(folder) as tmp:
        lora.save_pretrained(tmp / ADAPTER, save_embedding_layers=False)
        save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items() if "lora_" not in k},
                  tmp / TRAINED)
        (tmp / META).write_text(json.dumps(meta))


def read_meta(folder: Path) -> dict:
    return read_json(Path(folder) / META)


def load_trained(folder: Path, net: TrainedOnly, lora, fix: str) -> TrainedOnly:
    """Weights `save_trained` wrote into a freshly built `net` of the same kind; weights of another
    kind (other names or shapes) stop with `fix`, what to delete so that the rule retrains them."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = verified(folder)
    device = str(next(net.parameters()).device)
    adapter = load_file(folder / ADAPTER / "adapter_model.safetensors", device=device)
    rest = load_file(folder / TRAINED, device=device)
    trained = net.state_dict()
    expected_rest = {k for k in trained if "lora_" not in k}
    if set(rest) != expected_rest or len(adapter) != len(trained) - len(expected_rest):
        raise ValueError(f"{folder} holds other trained weights than this model trains ({len(adapter)} LoRA and "
                         f"{sorted(rest)[:3]} beside, for {len(trained) - len(expected_rest)} and "
                         f"{sorted(expected_rest)[:3]}); {fix}")
    try:
        loaded = set_peft_model_state_dict(lora, adapter)
        net.load_state_dict({**{k: v for k, v in trained.items() if "lora_" in k}, **rest})
    except RuntimeError as err:  # a shape that does not match
        raise ValueError(f"{folder} does not fit this model ({str(err).splitlines()[0]}); {fix}") from None
    if loaded.unexpected_keys:
        raise ValueError(f"{folder}: adapter weights {loaded.unexpected_keys[:3]} are not in this model; {fix}")
    return net


def resume(checkpoint: Path, net: torch.nn.Module, opt: torch.optim.Optimizer, fingerprint: dict) -> tuple[int, dict]:
    """Restore net and optimiser from `checkpoint` when it was written by the same run; return the
    first epoch (or step) still to run, 0 when there is nothing to resume, and what else was saved
    with it (`save_epoch`'s `extra`)."""
    if not checkpoint.exists():
        return 0, {}
    state = torch_load(checkpoint)
    if state.get("fingerprint") != fingerprint:
        log.warning("%s was written with other settings or data: starting over", checkpoint)
        checkpoint.unlink()
        return 0, {}
    net.load_state_dict(state["net"])
    opt.load_state_dict(state["opt"])
    log.info("resuming after %d done of %s", state["epoch"] + 1, checkpoint)
    return state["epoch"] + 1, state.get("extra", {})


@phase("save")
def save_epoch(checkpoint: Path, net, opt, epoch: int, fingerprint: dict, extra: dict | None = None) -> None:
    """Checkpoint after epoch (or step) `epoch`, with `extra` (a training history, say) to resume with."""
    with atomic_path(checkpoint) as tmp:
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "epoch": epoch, "fingerprint": fingerprint,
                    "extra": extra or {}}, tmp)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the training examples in one epoch."""
    return torch.randperm(n, generator=generator(seed, epoch))


@phase("train")
def train_epochs(net, opt, batch_loss, batches, epochs: int, checkpoint: Path, fingerprint: dict, what: str,
                 fix: str, accumulation: int = 1, curve: TrainingCurve | None = None) -> torch.nn.Module:
    """`epochs` passes of AdamW-style steps; `batches(epoch)` yields batches and `batch_loss(batch)`
    gives (mean loss, batch size). A step follows every `accumulation` batches, each loss divided by
    `accumulation` (exact for equal batches; an epoch's last, partial group steps too). Each epoch is
    checkpointed, so a killed run resumes where it stopped, and recorded in `curve`."""
    first, saved = resume(checkpoint, net, opt, fingerprint)
    rows = saved.get("curve", [])
    for epoch in tqdm(range(first, epochs), desc=what, mininterval=5):
        total, count, waiting, start = 0.0, 0, 0, time.time()
        opt.zero_grad()
        for batch in batches(epoch):
            loss, size = batch_loss(batch)
            check_finite(loss, f"{what} epoch {epoch + 1}", fix)
            (loss / accumulation).backward()
            waiting += 1
            if waiting == accumulation:
                opt.step()
                opt.zero_grad()
                waiting = 0
            total, count = total + loss.item() * size, count + size
        if waiting:
            opt.step()
            opt.zero_grad()
        log.info("%s epoch %d: mean training loss %.6f", what, epoch + 1, total / count)
        check_finite_weights(net, f"{what} epoch {epoch + 1}", fix)
        rows.append({"epoch": epoch + 1, "train_loss": total / count, "seconds": time.time() - start})
        save_epoch(checkpoint, net, opt, epoch, fingerprint, {"curve": rows})
        if curve is not None:
            curve.write(rows)
    return net


@phase("load")
def load_trainable(path: Path, device: str):
    """Model (float32 master weights, train mode, on device) and tokenizer."""
    model = AutoModelForCausalLM.from_pretrained(prepared_model(path), dtype=torch.float32).to(resolve_device(device))
    return model.train(), AutoTokenizer.from_pretrained(path)


def autocast(device: torch.device, dtype: str):
    """Mixed precision where the config asks for a low-precision dtype; plain float32 otherwise."""
    low = resolve_dtype(dtype, device)
    return torch.autocast(device.type, dtype=low) if low != torch.float32 else nullcontext()


@contextmanager
def casts_once(*models):
    """Under no_grad and one autocast region, cast each weight of `models` (None skipped) to the low
    precision once, not at every forward: autocast keeps its casts only of weights that require grad, so
    a frozen weight (the base under LoRA, a frozen main LM) is cast again at every decoded token, which on
    the CPU halves decoding speed. The frozen weights are marked trainable inside the block; no graph is
    built under no_grad, and the numbers are autocast's."""
    if torch.is_grad_enabled():
        raise RuntimeError("casts_once is for decoding under torch.no_grad(): with grad on, every weight would get one")
    frozen = {id(p): p for m in models if m is not None for p in m.parameters()
              if not p.requires_grad and p.is_floating_point()}
    for p in frozen.values():
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in frozen.values():
            p.requires_grad_(False)


@contextmanager
def eager_attention_on_cpu(*models):
    """Eager attention inside the block for models on the CPU (None skipped), for training steps: torch's
    fused CPU attention (sdpa) is slow to differentiate at these lengths, most of all over a padding mask:
    eager ran a left-padded Coconut step and a cramming step 1.27x as fast, an e* step 1.5x
    (benchmarks/training_step_speed.py). Decoding stays on sdpa (eager decoded 0.6-0.8x as fast) and CUDA
    keeps its own kernels; the two implementations differ only in rounding."""
    switched = [m for m in models
                if m is not None and m.device.type == "cpu" and m.config._attn_implementation == "sdpa"]
    for m in switched:
        m.set_attn_implementation("eager")
    try:
        yield
    finally:
        for m in switched:
            m.set_attn_implementation("sdpa")


@contextmanager
def lora_merged(model):
    """A peft model's LoRA folded into its base weights inside the block (decoding then does one matmul
    per adapted linear, not three: 2x on the CPU), and the base weights restored exactly afterwards, from a
    copy rather than by subtracting the product again. A model without LoRA is left as it is."""
    if not hasattr(model, "peft_config"):
        yield model
        return
    with torch.no_grad():
        base = {name: p.detach().clone() for name, p in model.named_parameters() if ".base_layer." in name}
        model.base_model.merge_adapter()
        try:
            yield model
        finally:
            model.base_model.unmerge_adapter()
            for name, p in model.named_parameters():
                if name in base:
                    p.copy_(base[name])


def with_adapters(model, finetune: str, lora: Lora, token_ids: list[int]):
    """The model to optimise: itself (`finetune: full`) or a fresh LoRA on it (`finetune: lora`),
    with the rows of `token_ids` in the embedding tables trainable too."""
    if finetune == "full":
        return model.requires_grad_(True)
    return with_lora(model, lora, trainable_token_indices=token_ids)


def with_lora(model, lora: Lora, **extra):
    """`model` with a fresh LoRA (peft) of a job's LoRA settings, every track's, and `extra` LoraConfig arguments."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=lora.lora_r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
                                            target_modules=lora.lora_target_modules, **extra))
