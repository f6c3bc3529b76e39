import math

import pytest
import torch

from soft_tokens.core.decoding import greedy_from_embeds
from soft_tokens.cramming.metrics import accuracy, downsample, information_metrics, mismatches, text_only_scores


def test_mismatches_by_hand():
    ids, pred = torch.tensor([1, 5, 3, 9]), torch.tensor([1, 2, 3, 8])
    scored = torch.tensor([True, True, True, True])
    assert mismatches(pred, ids, scored, "tf") == {"tf_mismatch@0": 0.0, "tf_mismatch@1": 1.0, "tf_mismatch@2": 0.0}
    out = mismatches(pred, ids, torch.tensor([False, True, True, True]), "greedy")
    assert math.isnan(out["greedy_mismatch@0"]) and out["greedy_mismatch@1"] == 1.0


def test_mismatch_beyond_a_short_text_is_nan():
    out = mismatches(torch.tensor([1, 2]), torch.tensor([1, 2]), torch.tensor([True, True]), "tf")
    assert out["tf_mismatch@1"] == 0.0 and math.isnan(out["tf_mismatch@2"])


def test_accuracy_counts_only_scored_positions():
    ids, pred = torch.tensor([1, 5, 3, 9]), torch.tensor([7, 5, 3, 8])
    assert accuracy(pred, ids, torch.tensor([True, True, True, True])) == 0.5
    assert accuracy(pred, ids, torch.tensor([False, True, True, True])) == pytest.approx(2 / 3)


def test_information_metrics_by_hand():
    # Two tokens at 1 bit each without vectors, certain with them: 2 bits gained.
    out = information_metrics(torch.tensor([math.log(2), math.log(2)]), torch.tensor([0.0, 0.0]), 0, 2)
    assert out["ce_text_bits"] == pytest.approx(2.0) and out["ce_with_mem_bits"] == 0.0
    assert out["information_gain_bits"] == pytest.approx(2.0) and out["gain_tokens"] == 2


def test_downsample_keeps_first_and_last_step():
    steps, values = downsample([float(i) for i in range(10)], 4)
    assert steps == [1, 4, 7, 10] and values == [0.0, 3.0, 6.0, 9.0]
    assert downsample([0.5, 0.7], 4) == ([1, 2], [0.5, 0.7])


def test_text_only_scores_match_the_model_loss(tiny):
    model, _ = tiny
    ids = torch.tensor([1, 40, 41, 42, 43])
    ce, pred = text_only_scores(model, ids)
    assert ce.shape == pred.shape == (4,)
    loss = model(input_ids=ids[None], labels=ids[None]).loss
    assert float(ce.mean()) == pytest.approx(float(loss), rel=1e-5)


def test_greedy_with_cache_equals_full_recomputation_and_batching(tiny):
    model, _ = tiny
    torch.manual_seed(0)
    prefix = torch.randn(3, 2, model.config.hidden_size) * 0.05
    batched = greedy_from_embeds(model, prefix, 6)
    for b in range(3):
        assert torch.equal(greedy_from_embeds(model, prefix[b : b + 1], 6)[0], batched[b])
        # Naive decode: recompute the whole sequence for every new token.
        seq = prefix[b : b + 1]
        tokens = []
        for _ in range(6):
            tokens.append(int(model(inputs_embeds=seq).logits[0, -1].argmax()))
            seq = torch.cat([seq, model.get_input_embeddings()(torch.tensor([[tokens[-1]]]))], dim=1)
        assert batched[b].tolist() == tokens
