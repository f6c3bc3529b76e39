"""Offline stand-ins for the data config/paper.yaml reads, for config/rehearsal.yaml: each hub dataset
as a local dataset of the same shape (its columns, its split names, its configuration name, read by the
same `datasets` code path) and Coconut's ProsQA files in the published JSON schema, all made from the
embedded story and generators. Tiny, so that the paper grid can run end to end in minutes.

    python -m soft_tokens.rehearsal runs/rehearsal/data     # what `make rehearsal` runs first
"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from soft_tokens.data.corpora import embedded_prose
from soft_tokens.data.reasoning import gsm_symbolic, prosqa_problem

# A dataset card naming each split's file: what a hub repository holds, so split names such as
# GSM8k-Aug's `valid` mean what they mean there.
CARD = "---\nconfigs:\n- config_name: {config}\n  data_files:\n{files}---\n"


def hub_folder(folder: Path, config: str, splits: dict[str, pd.DataFrame]) -> None:
    """A local dataset folder `datasets.load_dataset(folder, config, split=...)` reads like the hub one."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, df in splits.items():
        df.to_parquet(folder / f"{split}.parquet", index=False)
    files = "".join(f"  - split: {split}\n    path: {split}.parquet\n" for split in splits)
    (folder / "README.md").write_text(CARD.format(config=config, files=files))


def gsm8k_aug_shaped(problems: pd.DataFrame) -> pd.DataFrame:
    """GSM8k-Aug's columns: question, cot (the steps as a list), answer."""
    return pd.DataFrame({"question": problems.question, "cot": problems.steps.map(list), "answer": problems.answer})


def gsm8k_shaped(problems: pd.DataFrame) -> pd.DataFrame:
    """openai/gsm8k's columns: question, answer (the worked lines, then `#### N`)."""
    return pd.DataFrame({"question": problems.question,
                         "answer": [("\n".join(s) + f"\n#### {a}") for s, a in zip(problems.steps, problems.answer)]})


def prosqa_records(n: int, seed: int) -> list[dict]:
    """ProsQA problems in the published files' fields (question, steps, answer), at ProsQA's own sizes."""
    rng = np.random.default_rng(seed)
    return [prosqa_problem(rng, 12, 3, {3: 1, 4: 1}, 2) for _ in range(n)]


def write_rehearsal_data(folder: Path, seed: int = 0) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    prose = embedded_prose(120)
    pd.DataFrame({"text": prose.text}).to_parquet(folder / "pg19_valid_1k_chunks.parquet", index=False)
    books = [" ".join(prose.text[i:i + 8]) for i in range(0, len(prose), 8)]
    pd.DataFrame({"text": books}).to_parquet(folder / "pg19_test.parquet", index=False)
    problems = gsm_symbolic(20, seed)  # two training batches of coconut.batch_size, as prosqa's
    cut = {"train": problems.iloc[:8], "valid": problems.iloc[8:14], "test": problems.iloc[14:]}
    hub_folder(folder / "gsm8k_aug", "default", {s: gsm8k_aug_shaped(df) for s, df in cut.items()})
    hub_folder(folder / "gsm8k", "main", {"train": gsm8k_shaped(cut["train"]),
                                          "test": gsm8k_shaped(pd.concat([cut["valid"], cut["test"]]))})
    for i, (split, n) in enumerate({"train": 8, "valid": 6, "test": 8}.items()):
        records = prosqa_records(n, seed * 10 + i)
        (folder / f"prosqa_{split}.json").write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    write_rehearsal_data(Path(sys.argv[1]))
