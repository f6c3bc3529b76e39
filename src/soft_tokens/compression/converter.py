"""Converter: map a model's hidden states back into its input-embedding space.

Pairs are (hidden state of a token fed alone at some layer, that token's input-embedding row).
A linear or MLP map trained on them with MSE says how much of the input embedding a hidden state
still carries; nearest-neighbour accuracy against the embedding matrix says whether the token can
be read back.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from soft_tokens.compression.spec import TrainConverter
from soft_tokens.core.curves import TrainingCurve
from soft_tokens.core.io import atomic_path
from soft_tokens.core.phases import phase
from soft_tokens.core.tensor_files import load_tensors, torch_load
from soft_tokens.core.seeding import generator
from soft_tokens.core.training import epoch_order, train_epochs


def check_layer(model, layer: int, key: str = "converter.layers") -> int:
    """`layer` indexes hidden_states (0 = embeddings, -1 = last); out of range is a config error."""
    n = model.config.num_hidden_layers + 1
    if not -n <= layer < n:
        raise ValueError(f"{key}: layer {layer} is out of range for a model with {n - 1} layers "
                         f"(use {-n}..{n - 1}; 0 is the embedding output, -1 the last layer)")
    return layer


def hidden_states(model, **inputs) -> tuple[torch.Tensor, ...]:
    """Every layer's hidden states (embeddings first), from the model's body alone: the output head's
    logits, a vocabulary wide at every position, go unused by this track and cost a fifth of SmolLM2's
    forward (most of a tiny model's)."""
    return model.base_model(**inputs, output_hidden_states=True).hidden_states


def token_subset(vocab_size: int, max_tokens: int | None, seed: int) -> torch.Tensor:
    """All token ids, or a seeded random `max_tokens` of them, sorted."""
    if max_tokens is None or max_tokens >= vocab_size:
        return torch.arange(vocab_size)
    return torch.randperm(vocab_size, generator=generator(seed))[:max_tokens].sort().values


@phase("forward")
@torch.no_grad()
def extract_pairs(model, token_ids: torch.Tensor, layers: list[int], bos_id: int | None, batch_size: int) -> dict:
    """Per layer, X = hidden state at the token's position (token fed alone, after BOS if given), Y = its embedding."""
    for layer in layers:
        check_layer(model, layer)
    device = model.get_input_embeddings().weight.device
    xs = {layer: [] for layer in layers}
    for start in tqdm(range(0, len(token_ids), batch_size), desc="pairs", mininterval=5):
        ids = token_ids[start : start + batch_size, None].to(device)
        if bos_id is not None:
            ids = torch.cat([torch.full_like(ids, bos_id), ids], dim=1)
        hidden = hidden_states(model, input_ids=ids)
        for layer in layers:
            xs[layer].append(hidden[layer][:, -1].float().cpu())
    y = model.get_input_embeddings().weight[token_ids.to(device)].float().cpu()
    return {layer: {"X": torch.cat(xs[layer]), "Y": y, "token_ids": token_ids.clone()} for layer in layers}


def save_pairs(pairs: dict, path: Path, metadata: dict) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in pairs.items()}, tmp, metadata={k: str(v) for k, v in metadata.items()})


def load_pairs(path: Path) -> dict:
    pairs = load_tensors(path)
    if pairs["X"].shape[0] == 0:
        raise ValueError(f"{path} holds no pairs; raise converter.max_tokens or check the extract_pairs log")
    return pairs


def split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded train / held-out indices over the pairs (held-out tokens are never trained on)."""
    order = torch.randperm(n, generator=generator(seed))
    n_val = max(1, int(round(n * val_fraction)))
    return order[n_val:], order[:n_val]


class Standardize(torch.nn.Module):
    """Per-dimension standardisation fitted on the training states: hidden states carry a few huge
    outlier dimensions that otherwise dominate the MSE gradient."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, x: torch.Tensor) -> None:
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(1e-6))

    def forward(self, x):
        return (x - self.mean) / self.std


def build_converter(arch: str, in_dim: int, out_dim: int, hidden_dim: int) -> torch.nn.Sequential:
    if arch == "linear":
        core = [torch.nn.Linear(in_dim, out_dim)]
    elif arch == "mlp":
        core = [torch.nn.Linear(in_dim, hidden_dim), torch.nn.GELU(), torch.nn.Linear(hidden_dim, out_dim)]
    else:
        raise ValueError(f"converter.archs: unknown arch '{arch}' (linear or mlp)")
    return torch.nn.Sequential(Standardize(in_dim), *core)


def train_converter(x: torch.Tensor, y: torch.Tensor, settings: TrainConverter, checkpoint: Path,
                    fingerprint: dict, curve: TrainingCurve | None = None) -> torch.nn.Module:
    """Fit X -> Y with MSE; each epoch is checkpointed, so a killed run resumes where it stopped."""
    torch.manual_seed(settings.seed)
    net = build_converter(settings.arch, x.shape[1], y.shape[1], settings.hidden_dim)
    net[0].fit(x)
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)

    def batches(epoch):
        order = epoch_order(len(x), settings.seed, epoch)
        return (order[start : start + settings.batch_size] for start in range(0, len(x), settings.batch_size))

    return train_epochs(net, opt, lambda idx: (F.mse_loss(net(x[idx]), y[idx]), len(idx)), batches, settings.epochs,
                        checkpoint, fingerprint, f"converter {settings.arch}", "lower converter.lr", curve=curve)


def save_converter(net: torch.nn.Module, path: Path, meta: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save({"net": net.state_dict(), **meta}, tmp)


def load_converter(path: Path, hidden_size: int) -> torch.nn.Module:
    """A trained converter, refusing one trained on another model's width."""
    state = torch_load(path)
    if state["in_dim"] != hidden_size:
        raise ValueError(f"converter {path} maps {state['in_dim']}-d hidden states (model {state['model']}), "
                         f"but this model's hidden size is {hidden_size}; train a converter for this model")
    net = build_converter(state["arch"], state["in_dim"], state["out_dim"], state["hidden_dim"])
    net.load_state_dict(state["net"])
    return net.eval()


@torch.no_grad()
def nearest_token_hits(pred: torch.Tensor, embedding: torch.Tensor, token_ids: torch.Tensor, k: int):
    """Per row: is the true id the cosine-nearest embedding row (top-1), and among the k nearest (top-k)?"""
    sims = F.normalize(pred, dim=-1) @ F.normalize(embedding, dim=-1).T
    topk = sims.topk(k, dim=-1).indices
    return topk[:, 0] == token_ids, (topk == token_ids[:, None]).any(1)


@phase("forward")
@torch.no_grad()
def evaluate_converter(net, x, y, token_ids, embedding, k: int) -> dict:
    """Per held-out token: squared error (mean over dimensions), cosine, top-1 and top-k hits; the
    summary averages them with intervals."""
    pred = net(x)
    top1, topk = nearest_token_hits(pred, embedding, token_ids, k)
    return {
        "token_id": token_ids.tolist(),
        "mse": (pred - y).pow(2).mean(-1).tolist(),
        "cosine": F.cosine_similarity(pred, y, dim=-1).tolist(),
        "top1": top1.tolist(),
        "topk": topk.tolist(),
        "k": k,
    }
