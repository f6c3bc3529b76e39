"""Reasoning data: generators deterministic and right by construction, gsm_symbolic and hub
readers, seeded splits, and the one shared answer rule."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from soft_tokens.core.io import write_parquet
from soft_tokens.data.answers import extract_answer, is_correct
from soft_tokens.data.reasoning import (
    REASONING_COLUMNS,
    PRONTOQA_CONCEPTS,
    PRONTOQA_PROPERTIES,
    PROSQA_STEP_COUNTS,
    build_reasoning,
    canonical_form,
    distances,
    generated,
    prontoqa_problem,
    prosqa_problem,
    read_reasoning,
    reasoning_splits,
    split_problems,
)
from soft_tokens.rehearsal import hub_folder

PROSQA = {"kind": "prosqa", "n_problems": 30, "n_concepts": 10, "n_people": 3, "max_parents": 2,
          "step_counts": {3: 202, 4: 217, 5: 69, 6: 12}}
PRONTOQA = {"kind": "prontoqa", "n_problems": 30}


def test_answer_extraction_and_exact_match():
    assert extract_answer("Tom is a wumpus.\n### Tom is a yumpus.") == "Tom is a yumpus."
    assert extract_answer("so 12*3=36 ### 1,234 ") == "1234"
    assert extract_answer("no marker at all") == "no marker at all"
    assert is_correct("steps\n### 1,234", "#### 1234") and not is_correct("### 123", "1234")
    assert is_correct("# a # b ### True", "True")


@pytest.mark.parametrize("spec", [PROSQA, PRONTOQA], ids=["prosqa", "prontoqa"])
def test_generators_are_deterministic_for_a_seed(spec):
    a, b, c = build_reasoning("d", spec, 1), build_reasoning("d", spec, 1), build_reasoning("d", spec, 2)
    assert list(a.columns) == REASONING_COLUMNS and len(a) == 30
    assert a.drop(columns="steps").equals(b.drop(columns="steps")) and a["steps"].tolist() == b["steps"].tolist()
    assert a["question"].tolist() != c["question"].tolist()


def prosqa_graph_of(question: str) -> tuple[list[tuple[str, str]], str, list[str]]:
    """Every fact of a ProsQA question as an edge (people and concepts alike), the asked person, the options."""
    facts = re.findall(r"(?:Every )?(\w+) is a (\w+)\.", question)
    person, a, b = re.search(r"Is (\w+) a (\w+) or (\w+)\?$", question).groups()
    return facts, person, [a, b]


def test_prosqa_follows_the_published_construction():
    """One option reachable from the asked person and the other not (but from another person); the gold
    steps a shortest path over the stated facts in the published sentence forms; path lengths in the
    published proportions; a DAG."""
    rng = np.random.default_rng(0)
    lengths = []
    for _ in range(300):
        p = prosqa_problem(rng, n_concepts=10, n_people=3, step_counts=PROSQA_STEP_COUNTS, max_parents=2)
        facts, person, options = prosqa_graph_of(p["question"])
        names = sorted({n for e in facts for n in e})
        index = {n: i for i, n in enumerate(names)}
        edges = [(index[a], index[b]) for a, b in facts]
        dist = distances(edges, index[person])
        target = p["answer"].removeprefix(f"{person} is a ").removesuffix(".")
        other = next(o for o in options if o != target)
        assert target in options and index[target] in dist and index[other] not in dist
        sources = {a for a, _ in facts if a[0].isupper()} - {person}
        assert any(index[other] in distances(edges, index[q]) for q in sources)
        assert all(index[a] not in distances(edges, index[b]) for a, b in facts)  # no cycle
        # The steps: "Tom is a x." then "Every x is a y." ..., edge by edge, as long as the shortest path.
        assert p["steps"][0].startswith(f"{person} is a ") and all(s.startswith("Every ") for s in p["steps"][1:])
        hops = [re.fullmatch(r"(?:Every )?(\w+) is a (\w+)\.", s).groups() for s in p["steps"]]
        assert hops[0][0] == person and hops[-1][1] == target and all(h in facts for h in hops)
        assert all(x[1] == y[0] for x, y in zip(hops, hops[1:])) and len(hops) == dist[index[target]]
        lengths.append(len(hops))
    counts = np.bincount(lengths, minlength=7)[3:]
    expected = 300 * np.array([202, 217, 69, 12]) / 500
    assert (np.abs(counts - expected) < 4 * np.sqrt(expected) + 3).all()


def test_generated_problems_never_repeat_up_to_renaming_across_splits():
    tiny = {"kind": "prosqa", "n_problems": 40, "n_concepts": 5, "n_people": 2, "max_parents": 1,
            "step_counts": {2: 1}, "val_fraction": 0.2, "test_fraction": 0.3}
    splits = reasoning_splits("p", tiny, 0)
    forms = {k: {canonical_form(r) for r in df.to_dict("records")} for k, df in splits.items()}
    assert sum(map(len, forms.values())) == 40 and not (forms["train"] & (forms["val"] | forms["test"]))
    a = {"question": "Every wumpus is a yumpus. Tom is a wumpus. Is Tom a yumpus or zumpus?",
         "steps": ["Tom is a wumpus.", "Every wumpus is a yumpus."], "answer": "Tom is a yumpus."}
    swap = lambda text: text.replace("wumpus", "brimpus").replace("Tom", "Sally")  # noqa: E731
    renamed = {"question": swap(a["question"]), "steps": [swap(x) for x in a["steps"]], "answer": swap(a["answer"])}
    assert canonical_form(a) == canonical_form(renamed)
    assert canonical_form(a) != canonical_form({**a, "answer": "Tom is a zumpus."})
    with pytest.raises(ValueError, match="prosqa: only 2 distinct problems .* in 60 draws; lower n_problems"):
        generated("prosqa", 3, 0, lambda rng: renamed if rng.random() < 0.5 else {**a, "answer": "Tom is a zumpus."})


def test_coconut_json_reads_the_published_files(tmp_path):
    """Files shaped like Coconut's data/prosqa_*.json: a list of objects, extra keys left alone."""
    record = {"question": "Every wumpus is a yumpus. Tom is a wumpus. Is Tom a yumpus or zumpus?",
              "steps": ["Tom is a wumpus.", "Every wumpus is a yumpus."], "answer": "Tom is a yumpus.",
              "idx_to_symbol": ["Tom", "wumpus", "yumpus"], "edges": [[0, 1], [1, 2]], "root": 0, "target": 2,
              "neg_target": 3}
    files = {}
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        files[split] = str(tmp_path / f"prosqa_{split}.json")
        Path(files[split]).write_text(json.dumps([record] * n))
    splits = reasoning_splits("prosqa", {"kind": "coconut_json", "files": files}, 0)
    assert {k: len(v) for k, v in splits.items()} == {"train": 3, "val": 1, "test": 2}
    assert list(splits["test"].columns) == REASONING_COLUMNS and splits["test"]["steps"].iloc[0] == record["steps"]
    with pytest.raises(ValueError, match=r"reasoning.prosqa.files.test: .*missing\.json does not exist"):
        reasoning_splits("prosqa", {"kind": "coconut_json", "files": {**files, "test": str(tmp_path / "missing.json")}},
                         0)
    Path(files["test"]).write_text(json.dumps([record, {**record, "question": None}]))
    with pytest.raises(ValueError, match=r"^reasoning.prosqa.files.test \(question\): 1 of 2 rows of .*prosqa_test.json "
                                         r"hold no text \(row 1: nothing \(missing\)\); remove or fill in those rows"):
        reasoning_splits("prosqa", {"kind": "coconut_json", "files": files}, 0)
    Path(files["test"]).write_text(json.dumps([record, {**record, "steps": "Tom is a wumpus."}]))
    with pytest.raises(ValueError, match=r"files.test: .*the steps of 1 problems \(rows \[1\]\) are not a list of "
                                         r"texts"):
        reasoning_splits("prosqa", {"kind": "coconut_json", "files": files}, 0)
    Path(files["test"]).write_text("[]")
    with pytest.raises(ValueError, match=r"files.test: .*prosqa_test.json holds no problems"):
        reasoning_splits("prosqa", {"kind": "coconut_json", "files": files}, 0)
    Path(files["val"]).write_text(json.dumps([{"question": "q", "answer": "a"}]))
    with pytest.raises(ValueError, match=r"files.val: .*with question, steps and answer \(missing \['steps'\]\)"):
        reasoning_splits("prosqa", {"kind": "coconut_json", "files": files}, 0)


def prontoqa_rule_of(sentence: str) -> tuple[str, str, bool]:
    """(subject concept, predicate, holds) of a rule in any of ProntoQA's three forms; a predicate that
    is a concept comes back singular."""
    plural = re.fullmatch(r"([A-Z][a-z]+)es are (not )?([a-z]+)\.", sentence)
    if plural:
        subject, negated, predicate = plural.groups()
        return subject.lower(), predicate.removesuffix("es") if predicate.endswith("puses") else predicate, not negated
    subject, negated, concept, adjective = re.fullmatch(r"(?:Every|Each) ([a-z]+) is (not )?(?:an? ([a-z]+)|([a-z]+))\.",
                                                        sentence).groups()
    return subject, concept or adjective, not negated


def test_prontoqa_follows_the_published_construction():
    """23 shuffled rules in the three surface forms, the entity's two facts, the query; the answer is what
    forward chaining over the rules concludes; the proof climbs 4 concepts and concludes the fifth's
    property, paired into 6 steps as Coconut pairs it; the one other rule on the asked adjective is
    about a concept nothing else mentions; 14 concepts and 11 property families per problem."""
    rng = np.random.default_rng(0)
    family = {adj: i for i, words in enumerate(PRONTOQA_PROPERTIES) for adj in words}
    answers, forms, concluded_positive = [], [], []
    for _ in range(400):
        p = prontoqa_problem(rng)
        *sentences, query = re.split(r"(?<=\.) ", p["question"])
        entity, negated, asked = re.fullmatch(r"True or false: (\w+) is (not )?(\w+)\.", query).groups()
        rules, facts = sentences[:23], sentences[23:]
        assert [re.fullmatch(rf"{entity} is an? ([a-z]+)\.", f) is not None for f in facts] == [True, True]
        parsed = [prontoqa_rule_of(r) for r in rules]
        forms += [r.split()[0] if r.split()[0] in ("Every", "Each") else "plural" for r in rules]
        concepts = {s for s, _, _ in parsed} | {o for _, o, _ in parsed if o in PRONTOQA_CONCEPTS}
        adjectives = [o for _, o, _ in parsed if o not in PRONTOQA_CONCEPTS]
        assert len(concepts) == 14 and concepts <= set(PRONTOQA_CONCEPTS)
        assert len({family[a] for a in adjectives}) == 11 and len(adjectives) == 12
        known = {re.fullmatch(r".* an? ([a-z]+)\.", f).group(1) for f in facts}
        while new := {o for s, o, _ in parsed if s in known and o in PRONTOQA_CONCEPTS} - known:
            known |= new
        holds = {h for s, o, h in parsed if s in known and o == asked}
        assert len(holds) == 1
        assert p["answer"] == str(holds.pop() == (negated is None))
        about = [s for s, o, _ in parsed if o == asked]
        distractor = next(s for s in about if s not in known)
        assert len(about) == 2 and sum(distractor in (s, o) for s, o, _ in parsed) == 1
        proof = [sentence for step in p["steps"] for sentence in re.split(r"(?<=\.) ", step)]
        assert len(p["steps"]) == 6 and len(proof) == 11 and all(len(step.split(". ")) == 2 for step in p["steps"][:5])
        assert all(rule in rules for rule in proof[1:10:2])
        climbed = [fact.split()[-1].rstrip(".") for fact in proof[0:10:2]]  # c5 .. c1, each rule leading up
        assert [prontoqa_rule_of(rule) for rule in proof[1:8:2]] == [(a, b, True) for a, b in zip(climbed, climbed[1:])]
        assert proof[-1] == f"{entity} is {'' if holds_of(parsed, proof[-3]) else 'not '}{asked}."
        concluded_positive.append("not" not in proof[-1])
        answers.append(p["answer"])
    assert 0.44 < answers.count("True") / 400 < 0.56 and 0.46 < np.mean(concluded_positive) < 0.60
    assert 0.44 < forms.count("plural") / len(forms) < 0.56 and 0.2 < forms.count("Each") / len(forms) < 0.3


def holds_of(parsed: list[tuple[str, str, bool]], fact: str) -> bool:
    """Whether the concept in "<entity> is a <concept>." has the property its rule names."""
    concept = fact.split()[-1].rstrip(".")
    return next(h for s, o, h in parsed if s == concept and o not in PRONTOQA_CONCEPTS)


def test_renamed_problems_share_one_canonical_form():
    rng = np.random.default_rng(3)
    p = next(p for p in iter(lambda: prontoqa_problem(rng), None) if "an impus" in p["question"])
    swap = dict(zip(PRONTOQA_CONCEPTS, PRONTOQA_CONCEPTS[1:] + PRONTOQA_CONCEPTS[:1]))  # impus -> jompus

    def renamed_word(match):
        article, word = match.groups()
        new = swap[word.lower()].capitalize() if word[0].isupper() else swap[word]
        return f"{'an' if new[0] in 'aeiou' else 'a'} {new}" if article else new  # "an impus" -> "a jompus"

    def rename(text):
        return re.sub(r"\b(an? )?([A-Za-z][a-z]*pus)", renamed_word, text)

    renamed = {key: rename(value) if key != "steps" else [rename(s) for s in value] for key, value in p.items()}
    assert renamed["question"] != p["question"] and canonical_form(renamed) == canonical_form(p)
    assert canonical_form(prontoqa_problem(rng)) != canonical_form(p)


def test_gsm_symbolic_has_steps_and_bare_answers():
    df = build_reasoning("gsm", {"kind": "gsm_symbolic", "n_problems": 6}, seed=3)
    assert len(df) == 6 and df["steps"].map(len).min() >= 1
    assert df["answer"].str.fullmatch(r"-?[\d.]+").all()
    assert not any(s.startswith("####") for steps in df["steps"] for s in steps)
    assert df["question"].tolist() == build_reasoning("gsm", {"kind": "gsm_symbolic", "n_problems": 6}, 3)[
        "question"].tolist()


def gsm8k_aug_file(tmp_path, cot):
    """A local file shaped like GSM8k-Aug: question, cot (steps in one string), answer."""
    path = tmp_path / "gsm8k_aug.jsonl"
    pd.DataFrame({"question": ["q1", "q2"], "cot": cot, "answer": ["1,200", "#### 7"]}).to_json(
        path, orient="records", lines=True)
    return {"kind": "hub", "dataset": "whynlp/gsm8k-aug", "split": "train", "data_files": str(path),
            "question_column": "question", "steps_column": "cot", "answer_column": "answer",
            "steps_separator": " "}


def test_hub_reads_a_local_file_of_gsm8k_aug_shape(tmp_path):
    df = build_reasoning("gsm8k", gsm8k_aug_file(tmp_path, ["<<600*2=1200>>", "<<3+4=7>> <<7*1=7>>"]), 0)
    assert df["steps"].tolist() == [["<<600*2=1200>>"], ["<<3+4=7>>", "<<7*1=7>>"]]
    assert df["answer"].tolist() == ["1200", "7"] and df["source"].iloc[0] == "hub:whynlp/gsm8k-aug"
    with pytest.raises(ValueError, match="reasoning.gsm8k.steps_column: 'steps'"):
        build_reasoning("gsm8k", {**gsm8k_aug_file(tmp_path, ["a", "b"]), "steps_column": "steps"}, 0)


def test_a_problem_without_a_question_or_answer_is_named_with_its_row(tmp_path):
    spec = gsm8k_aug_file(tmp_path, ["<<1+1=2>>", "<<2+2=4>>"])
    pd.DataFrame({"question": ["q1", None], "cot": ["a", "b"], "answer": [7, 8]}).to_json(
        spec["data_files"], orient="records", lines=True)
    with pytest.raises(ValueError, match=r"^reasoning.gsm8k.question_column 'question': 1 of 2 rows of .* hold no text "
                                         r"\(row 1: nothing \(missing\)\)"):
        build_reasoning("gsm8k", spec, 0)
    pd.DataFrame({"question": ["q1", "q2"], "cot": ["a", "b"], "answer": [7, 8]}).to_json(
        spec["data_files"], orient="records", lines=True)
    assert build_reasoning("gsm8k", spec, 0)["answer"].tolist() == ["7", "8"]  # numbers are answers too


def test_a_dataset_without_steps_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no reasoning steps in any problem.*reasoning.gsm8k.steps_column"):
        build_reasoning("gsm8k", gsm8k_aug_file(tmp_path, ["", " "]), 0)


def test_hub_offline_names_the_fix(hub_offline):
    spec = {"kind": "hub", "dataset": "whynlp/gsm8k-aug", "split": "train", "question_column": "question",
            "steps_column": "cot", "answer_column": "answer", "steps_separator": " "}
    with pytest.raises(RuntimeError, match=r"reasoning.gsm8k.data_files"):
        build_reasoning("gsm8k", spec, 0)


def test_splits_are_seeded_disjoint_and_complete(tmp_path):
    df = build_reasoning("p", PROSQA, 0)
    splits = split_problems(df, 0.1, 0.2, seed=5, name="p")
    assert [len(splits[s]) for s in ("train", "val", "test")] == [21, 3, 6]
    ids = [set(splits[s]["id"]) for s in ("train", "val", "test")]
    assert set.union(*ids) == set(range(30)) and sum(map(len, ids)) == 30
    assert splits["test"]["id"].tolist() == split_problems(df, 0.1, 0.2, 5, "p")["test"]["id"].tolist()
    assert splits["test"]["id"].tolist() != split_problems(df, 0.1, 0.2, 6, "p")["test"]["id"].tolist()
    write_parquet(splits["val"], tmp_path / "val.parquet")
    back = read_reasoning(tmp_path / "val.parquet")
    assert back["steps"].tolist() == splits["val"]["steps"].tolist()
    with pytest.raises(ValueError, match=r"leaves split\(s\) \['val'\] empty.*reasoning.p.n_problems"):
        split_problems(df.head(4), 0.1, 0.25, 0, "p")


def test_unknown_kind_and_too_few_concepts():
    with pytest.raises(ValueError, match="reasoning.x.kind: unknown kind 'gsm'"):
        build_reasoning("x", {"kind": "gsm"}, 0)
    with pytest.raises(ValueError, match="n_concepts = 9 cannot hold a path of 6 steps"):
        prosqa_problem(np.random.default_rng(0), n_concepts=9, n_people=2, step_counts=PROSQA_STEP_COUNTS,
                       max_parents=2)


def test_hub_splits_take_the_datasets_own_splits(tmp_path):
    """A local folder with split files stands in for a hub id: the same datasets code path."""
    for split, n in (("train", 3), ("validation", 1), ("test", 2)):
        pd.DataFrame({"question": [f"{split}{i}" for i in range(n)], "cot": [["<<1+1=2>>"]] * n,
                      "answer": ["2"] * n}).to_parquet(tmp_path / f"{split}.parquet")
    spec = {"kind": "hub", "dataset": str(tmp_path), "split": "train", "question_column": "question",
            "steps_column": "cot", "answer_column": "answer", "steps_separator": "\n",
            "hub_splits": {"train": "train", "val": "validation", "test": "test"}, "val_fraction": 0.1,
            "test_fraction": 0.2}
    splits = reasoning_splits("gsm8k", spec, 0)
    assert {s: df["question"].tolist() for s, df in splits.items()} == {
        "train": ["train0", "train1", "train2"], "val": ["validation0"], "test": ["test0", "test1"]}
    assert splits["test"]["steps"].tolist() == [["<<1+1=2>>"]] * 2


def test_a_local_dataset_folder_is_read_as_it_is_now_not_from_the_cache_of_its_earlier_files(tmp_path, monkeypatch):
    """datasets reuses its cache of a local dataset folder whose card names its files after the files change,
    so a folder rewritten in place (make rehearsal rewrites runs/rehearsal/data) was read as it was before."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", tmp_path / "cache")
    spec = {"kind": "hub", "dataset": str(tmp_path / "gsm"), "config_name": "default", "split": "train",
            "question_column": "question", "steps_column": "cot", "answer_column": "answer", "steps_separator": "\n",
            "hub_splits": {"train": "train", "val": "train", "test": "train"}, "val_fraction": 0.1,
            "test_fraction": 0.2}
    for n in (3, 5):
        hub_folder(tmp_path / "gsm", "default", {"train": pd.DataFrame(
            {"question": [f"q{i}" for i in range(n)], "cot": [["<<1+1=2>>"]] * n, "answer": ["2"] * n})})
        assert len(reasoning_splits("gsm8k", spec, 0)["train"]) == n
