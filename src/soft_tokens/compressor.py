"""Compressors that predict e* from a context's hidden states, distilled from the frozen LM.

`hyper` (HyperPromptNet): k learned queries and the projected context states go through a small
transformer together; the queries' outputs are the k soft tokens. `qattn`: the k queries attend to
the context states once. Training mixes a regression to e* (cosine + norm) with KL distillation to
the teacher's next-token distribution over follow_text given the full context, plus optional
hidden-state and attention matching.
"""

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from soft_tokens.training import resume, save_epoch

log = logging.getLogger(__name__)


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


def build_compressor(arch: str, d_model: int, k: int, s: dict) -> torch.nn.Module:
    if k < 1:
        raise ValueError(f"estar.k must be at least 1, got {k}")
    if arch == "hyper":
        return HyperPromptNet(d_model, k, s["width"], s["heads"], s["layers"], s["ffn_dim"])
    if arch == "qattn":
        return QueryAttention(d_model, k, s["width"], s["heads"])
    raise ValueError(f"compressor.archs: unknown arch '{arch}' (hyper or qattn)")


def regression_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - cosine to e*, plus the squared relative error of the vector norms."""
    cos = 1 - F.cosine_similarity(pred, target, dim=-1)
    norm = ((pred.norm(dim=-1) - target.norm(dim=-1)) / target.norm(dim=-1)).pow(2)
    return (cos + norm).mean()


def distillation_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) over next-token distributions at temperature T, scaled by T^2."""
    t = F.log_softmax(teacher_logits / temperature, dim=-1)
    s = F.log_softmax(student_logits / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="none").sum(-1).mean() * temperature**2


def run_with_prefix(model, prefix: torch.Tensor, follow: torch.Tensor, layers: list[int], attentions: bool):
    """The frozen model on [prefix vectors, follow[:-1]]: outputs at the positions predicting follow."""
    embed = model.get_input_embeddings()
    inputs = torch.cat([prefix.to(embed.weight.dtype), embed(follow[:, :-1])], dim=1)
    out = model(inputs_embeds=inputs, output_hidden_states=bool(layers), output_attentions=attentions)
    return follow_view(out, prefix.shape[1], follow.shape[1], layers, attentions)


def run_with_context(model, context: torch.Tensor, follow: torch.Tensor, layers: list[int], attentions: bool):
    out = model(input_ids=torch.cat([context, follow[:, :-1]], dim=1), output_hidden_states=bool(layers),
                output_attentions=attentions)
    return follow_view(out, context.shape[1], follow.shape[1], layers, attentions)


def follow_view(out, n_prefix: int, n_follow: int, layers: list[int], attentions: bool) -> dict:
    """Logits, hidden states and (follow -> follow) attention maps at the positions predicting follow."""
    sl = slice(n_prefix - 1, n_prefix - 1 + n_follow)
    view = {"logits": out.logits[:, sl].float(), "hidden": {l: out.hidden_states[l][:, sl].float() for l in layers}}
    if attentions:  # follow queries onto follow keys: the block both inputs share
        view["attention"] = {l: out.attentions[l][:, :, sl, sl].float() for l in layers}
    return view


def compressor_loss(model, net, batch: dict, s: dict) -> tuple[torch.Tensor, dict]:
    """Weighted sum of the regression, KL, hidden-matching and attention-matching terms."""
    layers = s["match_layers"] if (s["hidden_weight"] or s["attention_weight"]) else []
    attentions = bool(s["attention_weight"])
    pred = net(batch["context_hidden"])
    student = run_with_prefix(model, pred, batch["follow"], layers, attentions)
    with torch.no_grad():
        teacher = run_with_context(model, batch["context"], batch["follow"], layers, attentions)
    terms = {"regression": regression_loss(pred, batch["estar"]),
             "kl": distillation_kl(student["logits"], teacher["logits"], s["temperature"])}
    if s["hidden_weight"]:
        terms["hidden"] = sum(1 - F.cosine_similarity(student["hidden"][l], teacher["hidden"][l], dim=-1).mean()
                              for l in layers) / len(layers)
    if attentions:
        terms["attention"] = sum(F.mse_loss(student["attention"][l], teacher["attention"][l])
                                 for l in layers) / len(layers)
    weights = {"regression": s["regression_weight"], "kl": s["kl_weight"], "hidden": s["hidden_weight"],
               "attention": s["attention_weight"]}
    total = sum(weights[name] * value for name, value in terms.items())
    return total, {name: value.item() for name, value in terms.items()}


def batches(data: dict, idx: torch.Tensor, size: int, device):
    for start in range(0, len(idx), size):
        part = idx[start : start + size]
        yield {key: value[part].to(device) for key, value in data.items()}


def train_compressor(model, net, data: dict, train_idx: torch.Tensor, s: dict, checkpoint: Path):
    """AdamW over the compressor only (the LM stays frozen); checkpointed each epoch for resumption."""
    device = model.get_input_embeddings().weight.device
    net.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
    first_epoch = resume(checkpoint, net, opt)
    for epoch in tqdm(range(first_epoch, s["epochs"]), desc="compressor", mininterval=5):
        order = train_idx[torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(s["seed"] + epoch))]
        for batch in batches(data, order, s["batch_size"], device):
            loss, terms = compressor_loss(model, net, batch, s)
            opt.zero_grad()
            loss.backward()
            opt.step()
        log.info("epoch %d: loss %.4f %s", epoch, loss.item(), {k: round(v, 4) for k, v in terms.items()})
        save_epoch(checkpoint, net, opt, epoch)
    return net.eval()


@torch.no_grad()
def evaluate_conditions(model, net, data: dict, idx: torch.Tensor, top_k: int) -> list[dict]:
    """Per held-out context and condition: CE of follow_text and top-k agreement with the teacher;
    for the compressor also MSE, cosine and norm RMSE against e*."""
    device = model.get_input_embeddings().weight.device
    rows = []
    for batch in batches(data, idx, 1, device):
        bos = batch["context"][:, :1]
        teacher = run_with_context(model, batch["context"], batch["follow"], [], False)["logits"]
        pred = net(batch["context_hidden"])
        conditions = {
            "no_context": run_with_context(model, bos, batch["follow"], [], False)["logits"],
            "full_context": teacher,
            "estar": run_with_prefix(model, batch["estar"], batch["follow"], [], False)["logits"],
            "compressor": run_with_prefix(model, pred, batch["follow"], [], False)["logits"],
        }
        teacher_top = teacher.argmax(-1)
        for name, logits in conditions.items():
            rows.append({
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
