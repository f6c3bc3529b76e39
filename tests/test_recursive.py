import pandas as pd
import pytest
import torch

from soft_tokens.compression.recursive import continuation_ce, demo_items, generate_batch, pooled_vector, prefix_embeds
from soft_tokens.data.corpora import embedded_prose


@pytest.fixture(scope="module")
def item(tiny):
    _, tokenizer = tiny
    return demo_items(embedded_prose(100), tokenizer, 1, 12, 6)[0]


def test_items_have_the_lengths_or_the_error_names_the_keys(tiny, item):
    _, tokenizer = tiny
    assert len(item["earlier"]) == 12 and len(item["continuation"]) == 6
    with pytest.raises(ValueError, match="lower recursive_demo.n_passages"):
        demo_items(pd.DataFrame({"id": [0], "text": ["Short. Text."], "source": ["x"]}), tokenizer, 1, 12, 6)


def test_prefix_layouts(tiny, item):
    model, tokenizer = tiny
    prompt = " Then:"
    n_prompt = len(tokenizer(prompt, add_special_tokens=False).input_ids)
    vector = torch.randn(model.config.hidden_size)
    sizes = {c: len(prefix_embeds(model, tokenizer, c, item, vector, prompt)) for c in ("none", "converter", "full_text")}
    assert sizes == {"none": 1 + n_prompt, "converter": 2 + n_prompt, "full_text": 1 + 12 + n_prompt}
    assert torch.equal(prefix_embeds(model, tokenizer, "converter", item, vector, prompt)[1], vector)


def test_continuation_ce_matches_the_model_loss_on_token_ids(tiny, item):
    model, tokenizer = tiny
    prompt_ids = tokenizer(" Then:", add_special_tokens=False).input_ids
    ids = torch.tensor([[tokenizer.bos_token_id] + item["earlier"] + prompt_ids + item["continuation"]])
    labels = ids.clone()
    labels[0, : -len(item["continuation"])] = -100
    expected = float(model(input_ids=ids, labels=labels).loss)
    prefix = prefix_embeds(model, tokenizer, "full_text", item, None, " Then:")
    assert continuation_ce(model, prefix, item["continuation"]) == pytest.approx(expected, rel=1e-5)


def test_pooled_vector_is_the_converter_of_the_mean_hidden_state(tiny, item):
    model, tokenizer = tiny
    v = pooled_vector(model, tokenizer, torch.nn.Identity(), item["earlier"], -1)
    hidden = model(input_ids=torch.tensor([[tokenizer.bos_token_id] + item["earlier"]]),
                   output_hidden_states=True).hidden_states[-1][0, 1:]
    torch.testing.assert_close(v, hidden.mean(0))


def test_batched_generation_with_left_padding_equals_one_at_a_time(tiny, item):
    model, tokenizer = tiny
    vector = torch.randn(model.config.hidden_size) * 0.02
    prefixes = [prefix_embeds(model, tokenizer, c, item, vector, " Then:") for c in ("none", "converter", "full_text")]
    together = generate_batch(model, tokenizer, prefixes, 5)
    alone = [generate_batch(model, tokenizer, [p], 5)[0] for p in prefixes]
    assert together == alone
