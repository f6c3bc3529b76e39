"""Answers of reasoning problems: one extraction and one exact-match rule for every method.

A model's output ends with `### <answer>`; the answer is the text after the last `#`, with commas
stripped (so `1,234` and `1234` agree), as in the Coconut evaluation.
"""


def extract_answer(text: str) -> str:
    return text.split("#")[-1].replace(",", "").strip()


def is_correct(generated: str, gold: str) -> bool:
    """Exact match of the extracted answers; the gold answer may itself carry a `####` prefix."""
    return extract_answer(generated) == extract_answer(gold)


def scored(text: str, gold: str) -> dict:
    """An evaluation row's answer columns: the gold answer, the output, its extracted answer, whether right."""
    return {"answer": gold, "generated": text, "predicted": extract_answer(text), "correct": is_correct(text, gold)}


def answer_suffix(answer: str) -> str:
    """The text a model is trained to end with: the marker, then the answer."""
    return f"### {answer}"
