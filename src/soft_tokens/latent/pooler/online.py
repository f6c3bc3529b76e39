"""Online compression: the model writes its own reasoning, and every window of W reasoning tokens it
completes is pooled and spliced in place of those tokens, on one KV-cached batched decoding loop.

Splicing never recomputes the sequence: the window's positions (and the old end marker) are masked
out of the attention from then on, and the vector (after a start marker, the first time) and a new
end marker are appended with the positions the compressed layout gives them. Every later token so
attends to exactly the compressed layout that training used. The masked entries still sit in the
cache (a batch shares one cache width); `context` counts what attention reads, as the compressed
layout would hold it.
"""

from dataclasses import dataclass

import torch

from soft_tokens.core.padding import pad, positions
from soft_tokens.core.phases import phase
from soft_tokens.latent.pooler.method import PoolIds


@dataclass
class Row:
    """One problem's decoding state."""

    tokens: list[int]  # generated so far
    pending: list[int]  # cache columns of the current, uncompressed window
    end_column: int | None = None  # the column of the live end marker, once a window is compressed
    vectors: int = 0
    reasoning: bool = True  # until the answer marker appears
    done: bool = False
    used: int = 0  # positions after the question the compressed layout holds at the end


@phase("decode")
@torch.no_grad()
def generate(main, pooler, questions: list[list[int]], window: int, ids: PoolIds, eos_id: int, marker_ids: set[int],
             max_new_tokens: int, compress: bool = True, line_end_ids: set[int] = frozenset()) -> list[Row]:
    """Greedy reasoning and answer for each question; with `compress`, every completed window of
    reasoning tokens becomes one pooled vector. Reasoning ends at the first token that is one of
    `marker_ids` (the answer marker); answer tokens are never compressed. A row ends at EOS or, once
    it has answered, at a token of `line_end_ids` (the answer is the marker's line). Batched output
    equals one question at a time."""
    device, table = main.device, main.get_input_embeddings()
    prompt, mask = (t.to(device) for t in pad(questions, left=True))
    position = mask.sum(1)  # the next position id of each row
    out = main(input_ids=prompt, attention_mask=mask, position_ids=positions(mask), use_cache=True, logits_to_keep=1)
    cache, logits = out.past_key_values, out.logits[:, -1]
    rows = [Row([], []) for _ in questions]
    for step in range(max_new_tokens):
        token = logits.argmax(-1)
        for b, row in enumerate(rows):
            if row.done:
                continue
            t = int(token[b])
            row.tokens.append(t)
            answered = not row.reasoning
            row.reasoning &= t not in marker_ids
            row.done = t == eos_id or step == max_new_tokens - 1 or (answered and t in line_end_ids)
            if row.done:  # everything after the question the layout holds, this last (unfed) token too
                row.used = int(position[b]) - len(questions[b]) + 1
        if all(row.done for row in rows):
            break
        splice = [compress and row.reasoning and not row.done and len(row.pending) == window - 1 for row in rows]
        column = mask.shape[1]
        if not any(splice):
            chunk, chunk_mask, chunk_pos = table(token[:, None]), torch.ones_like(token[:, None]), position[:, None]
            for b, row in enumerate(rows):
                if row.reasoning:
                    row.pending.append(column)
            mask = torch.cat([mask, chunk_mask], 1)
            out = main(inputs_embeds=chunk, attention_mask=mask, position_ids=chunk_pos, past_key_values=cache,
                       use_cache=True)
            position = position + 1
            cache, logits = out.past_key_values, out.logits[:, -1]
            continue
        # A three-slot chunk: splicing rows put [start marker or nothing, vector, end marker] there,
        # the others their token in slot 0 and nothing after it.
        d = table.weight.shape[1]
        chunk = torch.zeros((len(rows), 3, d), dtype=table.weight.dtype, device=device)
        chunk_mask = torch.zeros((len(rows), 3), dtype=mask.dtype, device=device)
        chunk_pos = torch.zeros((len(rows), 3), dtype=position.dtype, device=device)
        spliced = [b for b in range(len(rows)) if splice[b]]
        windows = torch.tensor([rows[b].tokens[-window:] for b in spliced], device=device)
        vectors = pooler(windows, [questions[b] + rows[b].tokens[:-window] for b in spliced]).to(chunk.dtype)
        markers = pooler.embed(torch.tensor([ids.start, ids.end], device=device)).to(chunk.dtype)
        for b, row in enumerate(rows):
            if not splice[b]:
                chunk[b, 0], chunk_mask[b, 0], chunk_pos[b, 0] = table(token[b]), 1, position[b]
                if row.reasoning:
                    row.pending.append(column)
                position[b] += 1
                continue
            mask[b, row.pending] = 0
            pos = int(position[b]) - len(row.pending)
            if row.end_column is not None:
                mask[b, row.end_column] = 0
                pos -= 1
            else:
                chunk[b, 0], chunk_mask[b, 0], chunk_pos[b, 0] = markers[0], 1, pos
                pos += 1
            chunk[b, 1], chunk[b, 2] = vectors[spliced.index(b)], markers[1]
            chunk_mask[b, 1:], chunk_pos[b, 1], chunk_pos[b, 2] = 1, pos, pos + 1
            row.pending, row.end_column, row.vectors = [], column + 2, row.vectors + 1
            position[b] = pos + 2
        mask = torch.cat([mask, chunk_mask], 1)
        out = main(inputs_embeds=chunk, attention_mask=mask, position_ids=chunk_pos, past_key_values=cache,
                   use_cache=True)
        cache = out.past_key_values
        last = torch.tensor([2 if s else 0 for s in splice], device=device)
        logits = out.logits[torch.arange(len(rows), device=device), last]
    return rows
