"""Compressors that predict e* from a context's hidden states, distilled from the frozen LM.

`hyper` (HyperPromptNet): k learned queries and the projected context states go through a small
transformer together; the queries' outputs are the k soft tokens. `qattn`: the k queries attend to
the context states once. Training mixes a regression to e* (cosine + norm) with KL distillation to
the teacher's next-token distribution over follow_text given the full context, plus optional
hidden-state and attention matching. The KL term needs no e*, so a compressor trains on many more
contexts than e* is optimised for; the regression applies where e* exists.
"""

from pathlib import Path

import torch
import torch.nn.functional as F

from soft_tokens.compression.spec import TrainCompressor
from soft_tokens.core.curves import TrainingCurve
from soft_tokens.core.io import atomic_path
from soft_tokens.core.phases import phase
from soft_tokens.core.tensor_files import torch_load
from soft_tokens.core.prefix import prefix_forward, text_view
from soft_tokens.core.training import eager_attention_on_cpu, epoch_order, train_epochs


class HyperPromptNet(torch.nn.Module):
    def __init__(self, d_model: int, k: int, width: int, heads: int, layers: int, ffn_dim: int):
        super().__init__()
        self.queries = torch.nn.Parameter(torch.randn(k, width) * 0.02)
        self.inp = torch.nn.Linear(d_model, width)
        layer = torch.nn.TransformerEncoderLayer(width, heads, ffn_dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = torch.nn.Linear(width, d_model)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        q = self.queries.expand(len(context), -1, -1)
        h = self.encoder(torch.cat([q, self.inp(context)], dim=1))
        return self.out(h[:, : q.shape[1]])


class QueryAttention(torch.nn.Module):
    def __init__(self, d_model: int, k: int, width: int, heads: int):
        super().__init__()
        self.queries = torch.nn.Parameter(torch.randn(k, width) * 0.02)
        self.inp = torch.nn.Linear(d_model, width)
        self.attn = torch.nn.MultiheadAttention(width, heads, batch_first=True)
        self.out = torch.nn.Linear(width, d_model)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        keys = self.inp(context)
        attended, _ = self.attn(self.queries.expand(len(context), -1, -1), keys, keys)
        return self.out(attended)


ARCHITECTURE = ("width", "heads", "layers", "ffn_dim")


def architecture(settings: TrainCompressor) -> dict:
    """The settings a compressor is rebuilt from (saved with it: the config may change later)."""
    return {key: getattr(settings, key) for key in ARCHITECTURE}


def build_compressor(arch: str, d_model: int, k: int, shape: dict) -> torch.nn.Module:
    """A compressor of the given architecture; `shape` holds its ARCHITECTURE keys."""
    if k < 1:
        raise ValueError(f"estar.k must be at least 1, got {k}")
    if arch == "hyper":
        return HyperPromptNet(d_model, k, shape["width"], shape["heads"], shape["layers"], shape["ffn_dim"])
    if arch == "qattn":
        return QueryAttention(d_model, k, shape["width"], shape["heads"])
    raise ValueError(f"compressor.archs: unknown arch '{arch}' (hyper or qattn)")


def save_compressor(net, path: Path, arch: str, d_model: int, k: int, shape: dict) -> None:
    """The trained net with everything needed to rebuild it, whatever the config says later."""
    with atomic_path(path) as tmp:
        torch.save({"net": net.state_dict(), "arch": arch, "d_model": d_model, "k": k,
                    **{key: shape[key] for key in ARCHITECTURE}}, tmp)


def load_compressor(path: Path, hidden_size: int) -> torch.nn.Module:
    """A trained compressor rebuilt from its own checkpoint, refusing one made for another width."""
    state = torch_load(path)
    if state["d_model"] != hidden_size:
        raise ValueError(f"{path} was trained for width {state['d_model']}, the model has {hidden_size}; "
                         "train a compressor for this model")
    net = build_compressor(state["arch"], state["d_model"], state["k"], state)
    net.load_state_dict(state["net"])
    return net.eval()


def regression_loss(pred: torch.Tensor, target: torch.Tensor, has_target: torch.Tensor) -> torch.Tensor:
    """Per context, 1 - cosine to e* plus the squared relative error of the vector norms, counted
    where the context has an e* and as zero elsewhere, averaged over the batch: each context weighs
    the same whichever others in its batch have an e* (most have none)."""
    pred_e, target_e = pred[has_target], target[has_target]
    cos = 1 - F.cosine_similarity(pred_e, target_e, dim=-1)
    norm = ((pred_e.norm(dim=-1) - target_e.norm(dim=-1)) / target_e.norm(dim=-1)).pow(2)
    return (cos + norm).mean(-1).sum() / len(pred)


def distillation_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) over next-token distributions at temperature T, scaled by T^2."""
    t = F.log_softmax(teacher_logits / temperature, dim=-1)
    s = F.log_softmax(student_logits / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="none").sum(-1).mean() * temperature**2


def run_with_context(model, context: torch.Tensor, follow: torch.Tensor, layers: list[int], attentions: bool):
    """The teacher: the frozen model reading the context as tokens, seen where it predicts follow."""
    out = model(input_ids=torch.cat([context, follow[:, :-1]], dim=1), output_hidden_states=bool(layers),
                output_attentions=attentions)
    return text_view(out, context.shape[1], follow.shape[1], layers, attentions)


def teacher_logits(model, teacher_final: torch.Tensor) -> torch.Tensor:
    """The teacher's logits where it predicts each follow token given the full context, from its last
    hidden states that build_estar stored (caching the logits themselves would take N x F x vocab floats)."""
    head = model.get_output_embeddings()  # the stored states are float32; a bf16 model's head is not
    return head(teacher_final.to(head.weight.dtype)).float()


def compressor_loss(model, net, batch: dict, settings: TrainCompressor) -> tuple[torch.Tensor, dict]:
    """Weighted sum of the regression (where e* exists), KL, hidden-matching and attention-matching terms."""
    layers = settings.match_layers if (settings.hidden_weight or settings.attention_weight) else []
    attentions = bool(settings.attention_weight)
    pred = net(batch["context_hidden"])
    student = prefix_forward(model, pred, batch["follow"], layers=layers, attentions=attentions)
    kl = distillation_kl(student["logits"], teacher_logits(model, batch["teacher_final"]), settings.temperature)
    terms = {"regression": regression_loss(pred, batch["estar"], batch["has_estar"]), "kl": kl}
    if layers:
        with torch.no_grad():
            teacher = run_with_context(model, batch["context"], batch["follow"], layers, attentions)
        if settings.hidden_weight:
            terms["hidden"] = sum(1 - F.cosine_similarity(student["hidden"][l], teacher["hidden"][l], dim=-1).mean()
                                  for l in layers) / len(layers)
        if attentions:
            terms["attention"] = sum(F.mse_loss(student["attention"][l], teacher["attention"][l])
                                     for l in layers) / len(layers)
    weights = {"regression": settings.regression_weight, "kl": settings.kl_weight, "hidden": settings.hidden_weight,
               "attention": settings.attention_weight}
    total = sum(weights[name] * value for name, value in terms.items())
    return total, {name: value.item() for name, value in terms.items()}


def batches(data: dict, idx: torch.Tensor, size: int, device):
    for start in range(0, len(idx), size):
        part = idx[start : start + size]
        yield {key: value[part].to(device) for key, value in data.items()}


def train_compressor(model, net, data: dict, train_idx: torch.Tensor, settings: TrainCompressor,
                     checkpoint: Path, fingerprint: dict, curve: TrainingCurve | None = None):
    """AdamW over the compressor only (the LM stays frozen); checkpointed each epoch for resumption."""
    device = model.get_input_embeddings().weight.device
    net.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)

    def batch_loss(batch):
        with eager_attention_on_cpu(model):
            return compressor_loss(model, net, batch, settings)[0], len(batch["estar"])

    def epoch_batches(epoch):
        return batches(data, train_idx[epoch_order(len(train_idx), settings.seed, epoch)], settings.batch_size, device)

    train_epochs(net, opt, batch_loss, epoch_batches, settings.epochs, checkpoint, fingerprint, "compressor",
                 "lower compressor.lr", curve=curve)
    return net.eval()


@phase("forward")
@torch.no_grad()
def evaluate_conditions(model, net, data: dict, idx: torch.Tensor, top_k: int) -> list[dict]:
    """Per held-out context and condition: CE of follow_text and top-k agreement with the teacher;
    for the compressor also MSE, cosine and norm RMSE against e*."""
    device = model.get_input_embeddings().weight.device
    rows = []
    for context, batch in zip(idx.tolist(), batches(data, idx, 1, device)):
        bos = batch["context"][:, :1]
        teacher = teacher_logits(model, batch["teacher_final"])
        pred = net(batch["context_hidden"])
        conditions = {
            "no_context": run_with_context(model, bos, batch["follow"], [], False)["logits"],
            "full_context": teacher,
            "estar": prefix_forward(model, batch["estar"], batch["follow"])["logits"],
            "compressor": prefix_forward(model, pred, batch["follow"])["logits"],
        }
        teacher_top = teacher.argmax(-1)
        for name, logits in conditions.items():
            rows.append({
                "context": context,
                "condition": name,
                "ce_nats": float(F.cross_entropy(logits[0], batch["follow"][0])),
                "topk_agreement": float((logits[0].topk(top_k, dim=-1).indices == teacher_top[0, :, None])
                                        .any(-1).float().mean()),
            })
        rows[-1].update({
            "mse": float(F.mse_loss(pred, batch["estar"])),
            "cosine": float(F.cosine_similarity(pred, batch["estar"], dim=-1).mean()),
            "norm_rmse": float((pred.norm(dim=-1) - batch["estar"].norm(dim=-1)).pow(2).mean().sqrt()),
        })
    return rows
