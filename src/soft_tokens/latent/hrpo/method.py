"""HRPO's hybrid input (hybrid reasoning policy optimisation): while the model is thinking, each next
input is a gated mix of the sampled token's embedding e and a thinking state h from the previous step,

    r = sigmoid(W_r e),  i = sigmoid(W_i e),  a = exp(-c softplus(-Lambda) r),  c = 8,
    input = a e + sqrt(1 - a^2) (i h),

a wrapper around an unmodified causal LM (any Llama-style model; LoRA through peft). Lambda starts so
that a = a0^r with a0 drawn per dimension from [a_min, a_max] (0.99-0.999): the model starts almost as
it was and learns how much to think in latent space. Two thinking states:

- `probs` (the paper): h = p @ E / ||p||_2, the embedding of the previous step's next-token
  distribution (at the sampling temperature), a token's own embedding when p is one-hot;
- `projection`: a learned Linear(d, d) of the previous step's last hidden state (init std 0.001),
  normalised to unit norm or to the token embeddings' RMS (`projection_norm`).

Blending stops once the answer marker has been written: from the marker token on, inputs are plain.
"""

import torch
import torch.nn.functional as F
from torch import nn

from soft_tokens.core.training import TrainedOnly
from soft_tokens.latent.hrpo.spec import METHODS, THINKING_STATES, BuildPolicy

C = 8.0
PROJECTION_NORMS = ("unit", "embedding_rms")


class ThinkingGate(nn.Module):
    """The gate of one hidden width; `forward(e, h)` gives the hybrid inputs and sqrt(1 - a^2)."""

    def __init__(self, width: int, a_min: float, a_max: float, std: float, generator: torch.Generator):
        super().__init__()
        self.r, self.i = nn.Linear(width, width), nn.Linear(width, width)
        for linear in (self.r, self.i):
            nn.init.normal_(linear.weight, std=std, generator=generator)
            nn.init.zeros_(linear.bias)
        a0 = torch.empty(width).uniform_(a_min, a_max, generator=generator)
        # softplus(-Lambda) = -log(a0) / c, so a = a0 ** r.
        self.Lambda = nn.Parameter(-torch.log(a0 ** (-1 / C) - 1))

    def log_a(self, e: torch.Tensor) -> torch.Tensor:
        return -C * F.softplus(-self.Lambda) * torch.sigmoid(self.r(e))

    def forward(self, e: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_a = self.log_a(e)
        # sqrt(1 - a^2) as -expm1(2 log a): exact near a = 1, and exactly 0 for a closed gate (a = 1).
        hidden = torch.sqrt(-torch.expm1(2 * log_a))
        return log_a.exp() * e + hidden * torch.sigmoid(self.i(e)) * h, hidden


class HybridPolicy(TrainedOnly):
    """The LM (a peft model when LoRA-trained) with, for HRPO, the gate and the thinking state.
    `state=None` is plain GRPO: inputs are always token embeddings. Its state dict holds the trained
    weights alone (LoRA, gate, projection)."""

    def __init__(self, lm, state: str | None, settings: BuildPolicy, generator: torch.Generator):
        super().__init__()
        if state is not None and state not in THINKING_STATES:
            raise ValueError(f"hrpo.methods: unknown thinking state '{state}'; use one of {METHODS}")
        self.lm, self.state = lm, state
        table = lm.get_input_embeddings().weight
        width = table.shape[1]
        self.register_buffer("embedding_rms", table.detach().float().pow(2).mean().sqrt(), persistent=False)
        if state is not None:
            self.gate = ThinkingGate(width, settings.a_min, settings.a_max, settings.gate_init_std, generator)
            self.gate.to(table.device)
        if state == "projection":
            if settings.projection_norm not in PROJECTION_NORMS:
                raise ValueError(f"hrpo.projection_norm: unknown '{settings.projection_norm}'; use one of "
                                 f"{PROJECTION_NORMS}")
            self.norm = settings.projection_norm
            self.projection = nn.Linear(width, width).to(table.device)
            nn.init.normal_(self.projection.weight, std=0.001, generator=generator)
            nn.init.zeros_(self.projection.bias)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm.get_input_embeddings()(ids)

    def probs_state(self, probs: torch.Tensor) -> torch.Tensor:
        """h = p @ E / ||p||_2 of next-token distributions [..., V]."""
        table = self.lm.get_input_embeddings().weight
        return (probs.to(table.dtype) @ table) / probs.norm(dim=-1, keepdim=True).to(table.dtype)

    def projected(self, hidden: torch.Tensor) -> torch.Tensor:
        """The `projection` state of last hidden states [..., d], at unit norm or the embeddings' RMS."""
        h = F.normalize(self.projection(hidden), dim=-1)
        if self.norm == "embedding_rms":
            h = h * self.embedding_rms * h.shape[-1] ** 0.5
        return h

    def inputs(self, ids: torch.Tensor, states: torch.Tensor | None, thinking: torch.Tensor):
        """Input embeddings of tokens `ids` [...]: the hybrid mix where `thinking`, plain elsewhere, and
        sqrt(1 - a^2) averaged over the width (NaN where not thinking). `states` are h (`probs`) or the
        last hidden states the projection reads (`projection`)."""
        e = self.embed(ids)
        if self.state is None:
            return e, torch.full(ids.shape, float("nan"), device=e.device)
        h = self.projected(states) if self.state == "projection" else states
        mixed, hidden = self.gate(e, h.to(e.dtype))
        ratio = torch.where(thinking, hidden.float().mean(-1), torch.nan)
        return torch.where(thinking[..., None], mixed, e), ratio
