import re

import pandas as pd
import pytest

from soft_tokens.core.io import write_parquet
from soft_tokens.data.corpora import (
    build_corpus,
    cramming_samples,
    embedded_prose,
    random_words,
    second_half,
    split_sentences,
)


def test_sentences_and_second_half_by_hand():
    text = "One two.  Three four! Five?\nSix seven. Eight"
    assert split_sentences(text) == ["One two.", "Three four!", "Five?", "Six seven.", "Eight"]
    assert second_half(text) == "Five? Six seven. Eight"
    assert second_half("no punctuation at all") == "no punctuation at all"


def test_embedded_prose_is_the_story_without_the_licence():
    df = embedded_prose(100)
    assert list(df.columns) == ["id", "text", "source"] and len(df) > 40
    assert not df["text"].str.contains("Gutenberg").any()
    assert (df["text"].str.split().str.len() >= 100).all()
    assert df["id"].tolist() == list(range(len(df)))


def test_random_words_are_seeded():
    a, b, c = random_words(3, 20, seed=1), random_words(3, 20, seed=1), random_words(3, 20, seed=2)
    assert a.equals(b) and not a.equals(c)
    assert (a["text"].str.split().str.len() == 20).all()


def test_cramming_samples_start_with_bos_and_have_the_length(tiny):
    _, tokenizer = tiny
    samples = cramming_samples(embedded_prose(100), tokenizer, 3, 16, False, 1337, "prose")
    assert [len(s["input_ids"]) for s in samples] == [16, 16, 16]
    assert all(s["input_ids"][0] == tokenizer.bos_token_id for s in samples)
    text = second_half(embedded_prose(100)["text"][0])
    assert samples[0]["input_ids"][1:] == tokenizer(text, add_special_tokens=False).input_ids[:15]
    # the seed's texts: the first tokens of each passage
    start = cramming_samples(embedded_prose(100), tokenizer, 3, 16, False, 1337, "prose", span="start")
    first = tokenizer(embedded_prose(100)["text"][0], add_special_tokens=False).input_ids[:15]
    assert start[0]["input_ids"] == [tokenizer.bos_token_id, *first] != samples[0]["input_ids"]
    with pytest.raises(ValueError, match="unknown text span 'middle'"):
        cramming_samples(embedded_prose(100), tokenizer, 3, 16, False, 1337, "prose", span="middle")


def test_drawn_lengths_are_seeded_and_in_range(tiny):
    _, tokenizer = tiny
    corpus = random_words(20, 50, seed=0)
    lengths = [len(s["input_ids"]) for s in cramming_samples(corpus, tokenizer, 20, 12, True, 7, "rw")]
    assert lengths == [len(s["input_ids"]) for s in cramming_samples(corpus, tokenizer, 20, 12, True, 7, "rw")]
    assert min(lengths) >= 2 and max(lengths) <= 12 and len(set(lengths)) > 3


def test_too_few_and_too_short_passages_are_clear_errors(tiny):
    _, tokenizer = tiny
    with pytest.raises(ValueError, match=r"has 3 passages but cramming.n_samples is 5"):
        cramming_samples(random_words(3, 50, seed=0), tokenizer, 5, 8, False, 0, "rw")
    with pytest.raises(ValueError, match=r"shorter than 500 tokens.*lower cramming.lengths"):
        cramming_samples(random_words(3, 50, seed=0), tokenizer, 3, 500, False, 0, "rw")


def test_hub_corpus_reads_a_local_file_of_the_same_shape(tmp_path):
    path = tmp_path / "pg19.parquet"
    pd.DataFrame({"text": ["a b. c d.", "e f. g h."], "book": ["x", "y"]}).to_parquet(path)
    spec = {"kind": "hub", "dataset": "yurakuratov/pg19_valid_1k_chunks", "split": "train",
            "text_column": "text", "data_files": str(path)}
    df = build_corpus("pg19", spec, 0)
    assert df["text"].tolist() == ["a b. c d.", "e f. g h."]
    assert df["source"].iloc[0] == "hub:yurakuratov/pg19_valid_1k_chunks"
    with pytest.raises(ValueError, match="corpora.pg19.text_column: 'body'"):
        build_corpus("pg19", {**spec, "text_column": "body"}, 0)


def test_hub_corpus_offline_names_the_fix(hub_offline):
    spec = {"kind": "hub", "dataset": "yurakuratov/pg19_valid_1k_chunks", "split": "train", "text_column": "text"}
    with pytest.raises(RuntimeError, match=r"corpora.pg19.data_files"):
        build_corpus("pg19", spec, 0)


def test_corpus_parquet_roundtrip(tmp_path):
    df = random_words(2, 5, seed=0)
    write_parquet(df, tmp_path / "c.parquet")
    assert pd.read_parquet(tmp_path / "c.parquet").equals(df)


@pytest.mark.parametrize("bad,said", [(None, "nothing (missing)"), (float("nan"), "nothing (missing)"),
                                      ("  ", "an empty text"), (b"caf\xe9", "bytes that are not UTF-8")])
def test_a_corpus_row_without_text_is_named_when_the_corpus_is_built(tmp_path, bad, said):
    """Else it fails far away, in cramming (`'float' object has no attribute 'split'`)."""
    path = tmp_path / "texts.parquet"
    pd.DataFrame({"text": ["a b. c d.", bad, "e f."]}).to_parquet(path)
    spec = {"kind": "hub", "dataset": "x/y", "split": "train", "text_column": "text", "data_files": str(path)}
    with pytest.raises(ValueError, match=rf"^corpora.pg19.text_column 'text': 1 of 3 rows of {path} hold no text "
                                         rf"\(row 1: {re.escape(said)}.*\); remove or fill in those rows and rerun$"):
        build_corpus("pg19", spec, 0)


def test_the_short_text_message_names_keys_of_every_corpus_kind(tiny):
    _, tokenizer = tiny
    with pytest.raises(ValueError, match=r"lower cramming.lengths, or give corpus 'rw' longer passages "
                                         r"\(corpora.rw.passage_words for kind embedded_prose, words_per_passage for "
                                         r"random_words; a hub corpus, a dataset or text_column with longer texts\)"):
        cramming_samples(random_words(3, 5, seed=0), tokenizer, 3, 500, False, 0, "rw")
