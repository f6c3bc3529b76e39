"""Corpora (one parquet schema: id, text, source) and the texts cut from them for cramming.

Following the cramming protocol, each passage is split into sentences and the second half is the
text to compress, truncated to the length under test.
"""

import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from soft_tokens.core.io import read_parquet
from soft_tokens.core.packages import package_dir

CORPUS_COLUMNS = ["id", "text", "source"]
STORY = "data/in_the_year_2889.txt"
WORD_LIST = "data/words3to10.txt"


def story_text() -> str:
    """The Gutenberg story bundled with reasoning-gym, without the licence header and footer."""
    text = (package_dir("reasoning_gym") / STORY).read_text(encoding="utf-8")
    start = re.search(r"\*\*\* START OF .*?\*\*\*", text)
    end = re.search(r"\*\*\* END OF .*?\*\*\*", text)
    return text[start.end() if start else 0 : end.start() if end else len(text)].strip()


def embedded_prose(passage_words: int) -> pd.DataFrame:
    """The story cut into consecutive passages of about `passage_words` words, at sentence ends."""
    passages, current = [], []
    for sentence in split_sentences(story_text()):
        current.append(sentence)
        if sum(len(s.split()) for s in current) >= passage_words:
            passages.append(" ".join(current))
            current = []
    return frame(passages, "embedded_prose:in_the_year_2889")


def random_words(n_passages: int, words_per_passage: int, seed: int) -> pd.DataFrame:
    """Passages of words drawn uniformly from a word list: text with no structure to exploit."""
    vocab = (package_dir("reasoning_gym") / WORD_LIST).read_text(encoding="utf-8").split()
    rng = np.random.default_rng(seed)
    passages = [" ".join(rng.choice(vocab, size=words_per_passage)) for _ in range(n_passages)]
    return frame(passages, "random_words:reasoning_gym/words3to10")


def hub_corpus(dataset: str, split: str, text_column: str, name: str, data_files: str | None = None):
    """A Hugging Face dataset (hub id, or a local parquet via `data_files`) in the corpus schema."""
    ds = load_hub_dataset(dataset, split, data_files, f"corpora.{name}",
                          "a local parquet, or use kind `embedded_prose`")
    if text_column not in ds.column_names:
        raise ValueError(
            f"corpora.{name}.text_column: '{text_column}' not in dataset columns {ds.column_names}"
        )
    texts = check_texts(list(ds[text_column]), f"corpora.{name}.text_column '{text_column}'", data_files or dataset)
    return frame(texts, f"hub:{dataset}")


def load_hub_dataset(dataset: str | None, split: str, data_files: str | None, key: str, instead: str,
                     config_name: str | None = None):
    """One split of a hub dataset (of its configuration `config_name`, e.g. openai/gsm8k's `main`), or a
    local .parquet/.json/.jsonl file of the same shape instead;
    an error names the config entry `key` and what to set: `{key}.data_files` to `instead` (offline),
    or, when data_files is the file that failed, that file."""
    import datasets

    if data_files:
        kind = "json" if data_files.endswith((".json", ".jsonl")) else "parquet"
        try:
            return datasets.load_dataset(kind, data_files=data_files, split="train")
        except Exception as err:
            raise ValueError(f"{key}.data_files: could not read {data_files} as {kind} ({type(err).__name__}: {err}); "
                             f"point it at a {kind} file of the dataset's shape") from err
    try:
        if Path(dataset).is_dir():  # its files as they are now: datasets reuses its cache of a folder whose
            # files changed (huggingface/datasets#2956)
            with tempfile.TemporaryDirectory() as cache:
                return datasets.load_dataset(dataset, config_name, split=split, cache_dir=cache, keep_in_memory=True)
        return datasets.load_dataset(dataset, config_name, split=split)
    except (ConnectionError, OSError, FileNotFoundError) as err:
        raise RuntimeError(f"could not load dataset '{dataset}' (offline?): {err}\n"
                           f"Set config `{key}.data_files` to {instead}.") from err


def unreadable_rows(values) -> list[tuple[int, str]]:
    """(row, what it holds) of each value that is no text: missing (None, NaN), empty, neither a string nor
    a number (a GSM8k answer may be one), or bytes that are not UTF-8. A dataset file may hold any of
    these; each would fail far from its row."""
    bad = []
    for row, value in enumerate(values):
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as err:
                bad.append((row, f"bytes that are not UTF-8 ({err.reason} at byte {err.start})"))
                continue
        if value is None or value != value:  # None, NaN
            bad.append((row, "nothing (missing)"))
        elif not isinstance(value, (str, int, float)) or isinstance(value, bool):
            bad.append((row, f"a {type(value).__name__}"))
        elif not str(value).strip():
            bad.append((row, "an empty text"))
    return bad


def check_texts(values, key: str, source: str) -> list[str]:
    """`values` as texts, or one error naming the config key, the rows and the fix."""
    bad = unreadable_rows(values)
    if bad:
        listed = "; ".join(f"row {row}: {what}" for row, what in bad[:5])
        raise ValueError(f"{key}: {len(bad)} of {len(values)} rows of {source} hold no text ({listed}"
                         f"{'; ...' if len(bad) > 5 else ''}); remove or fill in those rows and rerun")
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def frame(texts: list[str], source: str) -> pd.DataFrame:
    return pd.DataFrame({"id": range(len(texts)), "text": texts, "source": source})[CORPUS_COLUMNS]


def build_corpus(name: str, spec: dict, seed: int) -> pd.DataFrame:
    kind = spec["kind"]
    if kind == "embedded_prose":
        return embedded_prose(spec["passage_words"])
    if kind == "random_words":
        return random_words(spec["n_passages"], spec["words_per_passage"], seed)
    if kind == "hub":
        return hub_corpus(spec["dataset"], spec["split"], spec["text_column"], name, spec.get("data_files"))
    raise ValueError(f"corpora.{name}.kind: unknown kind '{kind}' (embedded_prose, random_words or hub)")


def split_sentences(text: str) -> list[str]:
    """Sentences at ., ! or ? followed by space; whitespace normalised."""
    text = " ".join(text.split())
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if s]


def second_half(text: str) -> str:
    sentences = split_sentences(text)
    return " ".join(sentences[len(sentences) // 2 :])


# Which tokens of a passage a cramming text is: its first ones (as compression_horizon's
# scripts/reproduction.py takes the first max_sequence_length tokens of each book) or the start of
# its second half of sentences (as hidden_capacity's pg19_valid_1k_chunks texts are sentence-cut).
TEXT_SPANS = ("start", "second_half")


def cramming_samples(
    corpus: pd.DataFrame, tokenizer, n_samples: int, length: int, draw_length: bool, seed: int, corpus_name: str,
    length_key: str = "cramming.lengths", span: str = "second_half",
) -> list[dict]:
    """The first `n_samples` passages as token ids (BOS first), each exactly `length` tokens long, cut
    from the passage's `span` (TEXT_SPANS).

    With `draw_length`, each sample's length is drawn uniformly from [2, length] instead, as in the
    random-vocabulary baseline. A corpus that cannot supply this is an error, never a silent shortfall.
    """
    if len(corpus) < n_samples:
        raise ValueError(
            f"corpus '{corpus_name}' has {len(corpus)} passages but cramming.n_samples is {n_samples}; "
            f"lower cramming.n_samples or give the corpus more passages"
        )
    if span not in TEXT_SPANS:
        raise ValueError(f"cramming.optimizer_settings: unknown text span '{span}' (one of {', '.join(TEXT_SPANS)})")
    rng = np.random.default_rng(seed)
    samples, too_short = [], []
    for row in corpus.head(n_samples).itertuples():
        text = second_half(row.text) if span == "second_half" else row.text
        ids = with_bos(tokenizer, tokenizer(text, add_special_tokens=False).input_ids)
        target = int(rng.integers(2, length + 1)) if draw_length else length
        if len(ids) < target:
            too_short.append((row.id, len(ids)))
        samples.append({"sample_id": int(row.id), "input_ids": ids[:target]})
    if too_short:
        raise ValueError(
            f"corpus '{corpus_name}': {len(too_short)} of {n_samples} passages are shorter than {length} "
            f"tokens in their {span.replace('_', ' ')} (id, tokens: {too_short[:5]}); lower {length_key}, or give "
            f"corpus '{corpus_name}' longer passages (corpora.{corpus_name}.passage_words for kind embedded_prose, "
            "words_per_passage for random_words; a hub corpus, a dataset or text_column with longer texts)"
        )
    return samples


def with_bos(tokenizer, ids: list[int]) -> list[int]:
    """Token 0 of every text is BOS; prepend it where the tokenizer adds none."""
    if tokenizer.bos_token_id is None:
        raise ValueError("the tokenizer has no BOS token; cramming scores token 0 as BOS")
    return ids if ids[:1] == [tokenizer.bos_token_id] else [tokenizer.bos_token_id] + ids


def read_corpus(path: Path) -> pd.DataFrame:
    df = read_parquet(path)
    if list(df.columns) != CORPUS_COLUMNS:
        raise ValueError(f"{path}: columns {list(df.columns)}, expected {CORPUS_COLUMNS}")
    return df
