"""Reasoning datasets for the latent-reasoning methods, in one schema: id, question, steps, answer, source.

`steps` is the worked chain of thought, one string per step; `answer` is the bare answer that an
output's `### <answer>` must match. Two generators (ProsQA and ProntoQA, as Coconut's data) are
correct by construction; gsm_symbolic comes from reasoning-gym; `hub` reads GSM8k-Aug-shaped data.
"""

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from soft_tokens.core.io import read_parquet
from soft_tokens.data.answers import extract_answer
from soft_tokens.data.corpora import check_texts, load_hub_dataset, unreadable_rows
from soft_tokens.vocabulary import REASONING_SPLITS

REASONING_COLUMNS = ["id", "question", "steps", "answer", "source"]
SYLLABLES = ["wum", "yum", "zum", "rem", "lem", "gwom", "shum", "brim", "terp", "jom", "storp", "yim", "dum",
             "vum", "sterp", "grim", "lorp", "bim", "quim", "twom", "frem", "nump", "kerp", "hum", "zorp", "plim"]
NAMES = ["Tom", "Alex", "Sally", "Max", "Rex", "Fae", "Polly", "Stella", "Wren", "Sam", "Jo", "Sue"]
# Words a problem may rename freely: its concepts ("wumpus", "Wumpuses" opening a sentence) and its people.
NAMED = re.compile(r"\b(?:(an? )?([A-Za-z][a-z]*pus)(es)?|" + "|".join(NAMES) + r")\b")


def concept_names(rng: np.random.Generator, n: int) -> list[str]:
    """n distinct fictional concept names ("wumpus", "sterpus", ...)."""
    if n > len(SYLLABLES):
        raise ValueError(f"at most {len(SYLLABLES)} concepts per problem, asked for {n}")
    return [s + ("us" if s.endswith("p") else "pus") for s in rng.choice(SYLLABLES, size=n, replace=False)]


# ProsQA's published test split (Coconut's data/prosqa_test.json): 202 of its 500 gold paths have 3
# steps, 217 have 4, 69 have 5 and 12 have 6.
PROSQA_STEP_COUNTS = {3: 202, 4: 217, 5: 69, 6: 12}


def reachable(edges: list[tuple[int, int]], start: int) -> set[int]:
    seen, frontier = {start}, [start]
    while frontier:
        node = frontier.pop()
        for a, b in edges:
            if a == node and b not in seen:
                seen.add(b)
                frontier.append(b)
    return seen


def distances(edges: list[tuple[int, int]], start: int) -> dict[int, int]:
    """The number of edges on the shortest path from `start` to every node it reaches (breadth first)."""
    dist, frontier = {start: 0}, [start]
    while frontier:
        nxt = []
        for node in frontier:
            for a, b in edges:
                if a == node and b not in dist:
                    dist[b] = dist[a] + 1
                    nxt.append(b)
        frontier = nxt
    return dist


def shortest_path(rng: np.random.Generator, edges: list[tuple[int, int]], dist: dict[int, int],
                  target: int) -> list[int]:
    """One shortest path to `target`, drawn uniformly at each step back among the parents one hop closer."""
    path = [target]
    while dist[path[-1]]:
        parents = sorted(a for a, b in edges if b == path[-1] and dist.get(a) == dist[path[-1]] - 1)
        path.append(int(rng.choice(parents)))
    return path[::-1]


def prosqa_graph(rng: np.random.Generator, n_people: int, n_concepts: int, n_steps: int, max_parents: int):
    """A random DAG over people (sources, nodes 0..n_people-1) and concepts, on two sides. The asked
    person's side: a path of n_steps edges from person 0 to the target, and further concepts that each
    take 1..max_parents parents on this side, some of them one hop short of a path node and so a
    second shortest path to it (never a cycle). The distractor side (the other people and the
    remaining concepts) is built alike from the other people and may lead into the asked person's
    side, never back, so none of it is in person 0's reach. Returns the edges, the target and the
    distractor side's concepts."""
    concepts = (n_people + rng.permutation(n_concepts)).tolist()
    n_own = n_concepts // 2 + 1
    path, extra, far = concepts[:n_steps], concepts[n_steps:n_own], concepts[n_own:]
    edges = list(zip([0] + path[:-1], path))
    dist = {0: 0, **{node: i + 1 for i, node in enumerate(path)}}

    def attach(node: int, pool: list[int]) -> list[int]:
        parents = rng.choice(pool, size=int(rng.integers(1, min(max_parents, len(pool)) + 1)), replace=False)
        edges.extend((int(a), node) for a in parents)
        return [int(a) for a in parents]

    for node in extra:
        parents = attach(node, [n for n in dist if n != path[-1]])
        dist[node] = 1 + min(dist[a] for a in parents)
        if dist[node] < n_steps and rng.random() < 0.5 and node not in reachable(edges, path[dist[node]]):
            edges.append((node, path[dist[node]]))
    placed = list(range(1, n_people))
    for node in far:
        attach(node, placed)
        if rng.random() < 0.3:
            edges.append((node, int(rng.choice(concepts[:n_own]))))
        placed.append(node)
    return edges, path[-1], far


def prosqa_problem(rng: np.random.Generator, n_concepts: int, n_people: int, step_counts: dict[int, int],
                   max_parents: int) -> dict:
    """A ProsQA problem as Coconut's Appendix describes them: "Is Tom a A or B?" over a random DAG of
    "<Person> is a x." and "Every x is a y." facts (shuffled), one option reachable from the asked
    person and the other (reachable from another person) not, the gold steps one shortest path to the
    answer in the same sentence forms, its length drawn from `step_counts` (weights; ProsQA's own in
    PROSQA_STEP_COUNTS). The DAG sampler (prosqa_graph) is ours: the published files fix the format,
    the invariants and the step counts, not the sampler.
    """
    lengths = sorted(step_counts)
    if n_concepts // 2 + 1 < max(lengths) or n_concepts // 2 + 1 >= n_concepts:
        raise ValueError(f"prosqa: n_concepts = {n_concepts} cannot hold a path of {max(lengths)} steps and a "
                         f"distractor (the asked person's side has {n_concepts // 2 + 1} concepts); raise n_concepts")
    weights = np.array([step_counts[k] for k in lengths], dtype=float)
    n_steps = int(rng.choice(lengths, p=weights / weights.sum()))
    names, people = concept_names(rng, n_concepts), [str(x) for x in rng.choice(NAMES, size=n_people, replace=False)]
    label = lambda node: people[node] if node < n_people else names[node - n_people]  # noqa: E731
    edges, target, far = prosqa_graph(rng, n_people, n_concepts, n_steps, max_parents)
    distractor = int(rng.choice(far))
    path = shortest_path(rng, edges, distances(edges, 0), target)

    def sentence(a: int, b: int) -> str:
        return f"{label(a)} is a {label(b)}." if a < n_people else f"Every {label(a)} is a {label(b)}."

    facts = [sentence(a, b) for a, b in edges]
    rng.shuffle(facts)
    options = [label(target), label(distractor)]
    rng.shuffle(options)
    question = " ".join(facts + [f"Is {people[0]} a {options[0]} or {options[1]}?"])
    return {"question": question, "steps": [sentence(a, b) for a, b in zip(path, path[1:])],
            "answer": f"{people[0]} is a {label(target)}."}


# ProntoQA (Saparov & He, 2023) as Coconut made its data: asaparov/prontoqa run_experiment.py with
# --ontology fictional --min-hops 5 --max-hops 5 --ordering random --few-shot-examples 0 and every other
# flag at its default (ModusPonens proofs, "relevant" distractors); Coconut's preprocessing/prontoqa.py
# then joins the question and query and pairs the proof's sentences into steps. The word lists are
# theory.py's fictional concepts and property families and run_experiment.py's entity names.
PRONTOQA_CONCEPTS = ["wumpus", "yumpus", "zumpus", "dumpus", "rompus", "numpus", "tumpus", "vumpus", "impus",
                     "jompus", "gorpus", "shumpus", "lempus", "sterpus", "grimpus", "lorpus", "brimpus"]
PRONTOQA_PROPERTIES = [["blue", "red", "brown", "orange"], ["small", "large"],
                       ["metallic", "wooden", "luminous", "liquid"], ["transparent", "opaque"],
                       ["nervous", "happy", "feisty", "shy"], ["bright", "dull"], ["sweet", "sour", "spicy", "bitter"],
                       ["floral", "fruity", "earthy"], ["hot", "cold", "temperate"],
                       ["kind", "mean", "angry", "amenable", "aggressive"], ["melodic", "muffled", "discordant", "loud"],
                       ["slow", "moderate", "fast"], ["windy", "sunny", "overcast", "rainy", "snowy"]]
PRONTOQA_ENTITIES = ["Fae", "Rex", "Sally", "Max", "Alex", "Sam", "Polly", "Stella", "Wren"]
PRONTOQA_HOPS = 5
# theory.py gives each concept one property, negated with weight 1/2 against 1. proof.py walks up from the
# entity's concept, at each node going up with weight 1 or concluding a property with weight 0.3 (0.7 if
# negated), and run_experiment.py rejects every walk that is not exactly 5 hops long: so the 4 concepts
# passed on the way are more often positive, and the concluded one about evenly so.
P_POSITIVE = 2 / 3
P_POSITIVE_PASSED = (P_POSITIVE / 1.3) / (P_POSITIVE / 1.3 + (1 - P_POSITIVE) / 1.7)
P_POSITIVE_CONCLUDED = (P_POSITIVE * 0.3 / 1.3) / (P_POSITIVE * 0.3 / 1.3 + (1 - P_POSITIVE) * 0.7 / 1.7)


def with_article(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' and not noun.startswith('eu') else 'a'} {noun}"


def prontoqa_rule(rng: np.random.Generator, subject: str, predicate: str, negated: bool = False) -> str:
    """"Wumpuses are (not) P." half the time, else "Every/Each wumpus is (not) P." (syntax.py draws the
    form per sentence); a concept predicate takes its article or plural."""
    concept = predicate in PRONTOQA_CONCEPTS
    no = "not " if negated else ""
    if rng.random() < 0.5:
        return f"{subject.capitalize()}es are {no}{predicate + 'es' if concept else predicate}."
    quantifier = "Every" if rng.random() < 0.5 else "Each"
    return f"{quantifier} {subject} is {no}{with_article(predicate) if concept else predicate}."


def prontoqa_problem(rng: np.random.Generator) -> dict:
    """A 5-hop ProntoQA question over a fictional ontology, drawn from the distribution the reference's
    rejection sampler leaves (it only keeps ontologies exactly 5 deep, so this draws those directly).

    The ontology: a chain c0 <- c1 <- ... <- c5, each c_l a kind of c_(l-1) and of a distractor parent
    D_l; c1..c5, the D_l and a separate concept pair (dchild, a kind of droot) each carry one property
    of its own family; the entity is a c5 and a dchild. The proof climbs c5 to c1 and concludes c1's
    property; the query is that conclusion or its negation (answer True or False, evenly), and one more
    rule about an unused concept states the opposite of the conclusion (the "relevant" distractor).
    The 23 rules come in random order, the entity's two facts after them.
    """
    h = PRONTOQA_HOPS
    names = [str(n) for n in rng.permutation(PRONTOQA_CONCEPTS)]
    chain, parents, (root, child, unused) = names[:h + 1], names[h + 1:2 * h + 1], names[2 * h + 1:2 * h + 4]
    adjectives = [str(rng.choice(PRONTOQA_PROPERTIES[f])) for f in rng.permutation(len(PRONTOQA_PROPERTIES))[:2 * h + 1]]
    chain_adj, parent_adj, child_adj = adjectives[:h], adjectives[h:2 * h], adjectives[2 * h]
    chain_pos = [rng.random() < (P_POSITIVE_CONCLUDED if l == 0 else P_POSITIVE_PASSED) for l in range(h)]
    rules, is_a, has = [], {}, {}
    for l in range(1, h + 1):
        is_a[chain[l]] = prontoqa_rule(rng, chain[l], chain[l - 1])
        has[chain[l]] = prontoqa_rule(rng, chain[l], chain_adj[l - 1], not chain_pos[l - 1])
        rules += [is_a[chain[l]], prontoqa_rule(rng, chain[l], parents[l - 1]), has[chain[l]],
                  prontoqa_rule(rng, parents[l - 1], parent_adj[l - 1], rng.random() >= P_POSITIVE)]
    rules += [prontoqa_rule(rng, child, root), prontoqa_rule(rng, child, child_adj, rng.random() >= P_POSITIVE)]
    adjective, concluded = chain_adj[0], chain_pos[0]
    rules.append(prontoqa_rule(rng, unused, adjective, concluded))
    entity = str(rng.choice(PRONTOQA_ENTITIES))
    facts = [f"{entity} is {with_article(chain[-1])}.", f"{entity} is {with_article(child)}."]
    order, fact_order = rng.permutation(len(rules)), rng.permutation(2)
    flipped = bool(rng.random() < 0.5)
    query = f"True or false: {entity} is {'' if concluded != flipped else 'not '}{adjective}."
    proof = []
    for l in range(h, 0, -1):
        proof += [f"{entity} is {with_article(chain[l])}.", is_a[chain[l]] if l > 1 else has[chain[1]]]
    proof.append(f"{entity} is {'' if concluded else 'not '}{adjective}.")
    question = " ".join([rules[i] for i in order] + [facts[i] for i in fact_order] + [query])
    return {"question": question, "steps": [" ".join(proof[i:i + 2]) for i in range(0, len(proof), 2)],
            "answer": "False" if flipped else "True"}


def canonical_form(problem: dict) -> str:
    """A problem with its concept and person names renamed by first appearance: two problems with the
    same form are the same problem up to renaming (same graph, same fact order)."""
    text = "\n".join([problem["question"], *problem["steps"], problem["answer"]])
    seen: dict[str, int] = {}

    def rename(match: re.Match) -> str:
        name = (match.group(2) or match.group(0)).lower()  # "an impus" and "a wumpus" alike
        return f"{'a ' if match.group(1) else ''}<{seen.setdefault(name, len(seen))}>{match.group(3) or ''}"

    return NAMED.sub(rename, text)


def generated(kind: str, n: int, seed: int, make) -> pd.DataFrame:
    """n problems from `make`, no two the same up to renaming (so no split holds another's problem)."""
    rng, problems, forms = np.random.default_rng(seed), [], set()
    for _ in range(20 * n):
        problem = make(rng)
        if canonical_form(problem) not in forms:
            forms.add(canonical_form(problem))
            problems.append(problem)
            if len(problems) == n:
                return problem_frame(problems, f"{kind}:generated(seed={seed})")
    raise ValueError(f"{kind}: only {len(problems)} distinct problems (up to renaming) in {20 * n} draws; lower "
                     "n_problems or make the problems larger")


def gsm_symbolic(n: int, seed: int) -> pd.DataFrame:
    """GSM8K-derived problems from reasoning-gym; each line of the worked answer is a step."""
    import reasoning_gym

    problems = []
    for item in reasoning_gym.create_dataset("gsm_symbolic", size=n, seed=seed):
        lines = [line.strip() for line in item["metadata"]["answer_cot"].splitlines()]
        steps = [line for line in lines if line and not line.startswith("####")]
        problems.append({"question": item["question"], "steps": steps, "answer": extract_answer(item["answer"])})
    return problem_frame(problems, "gsm_symbolic:reasoning_gym")


def hub_reasoning(spec: dict, name: str, split: str | None = None) -> pd.DataFrame:
    """A Hugging Face dataset shaped like GSM8k-Aug (question, steps, answer), or a local file of it."""
    ds = load_hub_dataset(spec.get("dataset"), split or spec["split"], spec.get("data_files"), f"reasoning.{name}",
                          "a local file of the same shape, or use kind `prosqa`, `prontoqa` or `gsm_symbolic`",
                          spec.get("config_name"))
    columns = {key: spec[f"{key}_column"] for key in ("question", "steps", "answer")}
    for key, column in columns.items():
        if column not in ds.column_names:
            raise ValueError(f"reasoning.{name}.{key}_column: '{column}' not in dataset columns {ds.column_names}")
    if spec.get("max_problems"):
        ds = ds.select(range(min(spec["max_problems"], len(ds))))
    read_from = spec.get("data_files") or spec.get("dataset")
    texts = {key: check_texts(list(ds[column]), f"reasoning.{name}.{key}_column '{column}'", read_from)
             for key, column in columns.items() if key != "steps"}
    problems = []
    for question, steps, answer in zip(texts["question"], ds[columns["steps"]], texts["answer"]):
        if isinstance(steps, str):
            steps = steps.split(spec["steps_separator"])
        problems.append({"question": question, "steps": [s.strip() for s in steps or [] if s.strip()],
                         "answer": extract_answer(answer)})
    return problem_frame(problems, f"hub:{spec.get('dataset') or spec['data_files']}")


def problem_frame(problems: list[dict], source: str) -> pd.DataFrame:
    df = pd.DataFrame(problems, columns=["question", "steps", "answer"])
    df.insert(0, "id", range(len(df)))
    df["source"] = source
    return df[REASONING_COLUMNS]


def build_reasoning(name: str, spec: dict, seed: int, split: str | None = None) -> pd.DataFrame:
    kind = spec["kind"]
    if kind == "prosqa":
        counts = {int(k): v for k, v in spec["step_counts"].items()}
        df = generated(kind, spec["n_problems"], seed,
                       lambda rng: prosqa_problem(rng, spec["n_concepts"], spec["n_people"], counts,
                                                  spec["max_parents"]))
    elif kind == "prontoqa":
        df = generated(kind, spec["n_problems"], seed, prontoqa_problem)
    elif kind == "gsm_symbolic":
        df = gsm_symbolic(spec["n_problems"], seed)
    elif kind == "hub":
        df = hub_reasoning(spec, name, split)
    else:
        raise ValueError(f"reasoning.{name}.kind: unknown kind '{kind}' (prosqa, prontoqa, gsm_symbolic, hub or "
                         "coconut_json)")
    if not df["steps"].map(len).any():
        raise ValueError(
            f"reasoning dataset '{name}' has no reasoning steps in any problem; latent reasoning replaces "
            f"steps, so point reasoning.{name}.steps_column (or steps_separator) at the worked solutions"
        )
    return df


def coconut_json(spec: dict, name: str, split: str) -> pd.DataFrame:
    """One split of Coconut's published JSON files (data/prosqa_test.json, ...: a list of objects with
    question, steps and answer; other keys such as the graph's `edges` are left)."""
    path = Path(spec["files"][split])
    if not path.exists():
        raise ValueError(f"reasoning.{name}.files.{split}: {path} does not exist (Coconut's data/{{prosqa,prontoqa}}_"
                         "{train,valid,test}.json; the ProntoQA ones come from its preprocessing/prontoqa.py)")
    records = json.loads(path.read_text())
    missing = [key for key in ("question", "steps", "answer") if records and key not in records[0]]
    if not isinstance(records, list) or missing:
        raise ValueError(f"reasoning.{name}.files.{split}: {path} is not a list of objects with question, steps and "
                         f"answer (missing {missing})")
    key = f"reasoning.{name}.files.{split}"
    questions, answers = (check_texts([r.get(field) for r in records], f"{key} ({field})", str(path))
                          for field in ("question", "answer"))
    steps = [r.get("steps") for r in records]
    if bad := [i for i, s in enumerate(steps) if not isinstance(s, list) or unreadable_rows(s)]:
        raise ValueError(f"{key}: {path}: the steps of {len(bad)} problems (rows {bad[:5]}) are not a list of texts; "
                         "fix those rows and rerun")
    if not records:
        raise ValueError(f"{key}: {path} holds no problems; point it at a non-empty split")
    return problem_frame([{"question": q, "steps": s, "answer": a} for q, s, a in zip(questions, steps, answers)],
                         f"coconut_json:{path}")


def reasoning_splits(name: str, spec: dict, seed: int) -> dict[str, pd.DataFrame]:
    """train/val/test: the files' or a hub dataset's own splits where the spec names them, else seeded
    random ones. Generated problems never repeat across splits up to renaming; for read ones, held-out
    problems that a training problem repeats are counted in the log and kept (the published split)."""
    if spec["kind"] == "coconut_json":
        splits = {split: coconut_json(spec, name, split) for split in REASONING_SPLITS}
    elif spec["kind"] == "hub" and spec.get("hub_splits") and not spec.get("data_files"):
        splits = {split: build_reasoning(name, spec, seed, spec["hub_splits"][split]) for split in REASONING_SPLITS}
        if empty := [split for split, df in splits.items() if df.empty]:
            raise ValueError(f"reasoning.{name}.hub_splits: split(s) {empty} of {spec['dataset']} hold no problems; "
                             "name splits that do")
    else:
        splits = split_problems(build_reasoning(name, spec, seed), spec["val_fraction"], spec["test_fraction"], seed,
                                name)
    seen = set(map(canonical_form, splits["train"].to_dict("records")))
    for split in ("val", "test"):
        repeats = sum(canonical_form(r) in seen for r in splits[split].to_dict("records"))
        if repeats:
            logging.warning("reasoning %s: %d of %d %s problems repeat a training problem up to renaming", name,
                            repeats, len(splits[split]), split)
    return splits


def split_problems(df: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int,
                   name: str) -> dict[str, pd.DataFrame]:
    """Seeded train/val/test splits; each must hold at least one problem."""
    order = np.random.default_rng(seed).permutation(len(df))
    n_val, n_test = round(len(df) * val_fraction), round(len(df) * test_fraction)
    parts = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    empty = [split for split, idx in parts.items() if len(idx) == 0]
    if empty:
        raise ValueError(
            f"reasoning dataset '{name}' ({len(df)} problems) leaves split(s) {empty} empty; raise "
            f"reasoning.{name}.n_problems or adjust val_fraction / test_fraction"
        )
    return {split: df.iloc[np.sort(idx)].reset_index(drop=True) for split, idx in parts.items()}


def read_reasoning(path) -> pd.DataFrame:
    df = read_parquet(path)
    if list(df.columns) != REASONING_COLUMNS:
        raise ValueError(f"{path}: columns {list(df.columns)}, expected {REASONING_COLUMNS}")
    df["steps"] = df["steps"].map(list)
    return df
