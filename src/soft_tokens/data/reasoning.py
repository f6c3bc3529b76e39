"""Reasoning datasets for the latent-reasoning methods, in one schema: id, question, steps, answer, source.

`steps` is the worked chain of thought, one string per step; `answer` is the bare answer that an
output's `### <answer>` must match. Two generators (ProsQA- and ProntoQA-style graph problems) are
correct by construction; gsm_symbolic comes from reasoning-gym; `hub` reads GSM8k-Aug-shaped data.
"""

import numpy as np
import pandas as pd

from soft_tokens.data.answers import extract_answer
from soft_tokens.data.corpora import load_hub_dataset
from soft_tokens.vocabulary import REASONING_SPLITS

REASONING_COLUMNS = ["id", "question", "steps", "answer", "source"]
SYLLABLES = ["wum", "yum", "zum", "rem", "lem", "gwom", "shum", "brim", "terp", "jom", "storp", "yim", "dum",
             "vum", "sterp", "grim", "lorp", "bim", "quim", "twom", "frem", "nump", "kerp", "hum", "zorp", "plim"]
NAMES = ["Tom", "Alex", "Sally", "Max", "Rex", "Fae", "Polly", "Stella", "Wren", "Sam", "Jo", "Sue"]
ADJECTIVES = ["red", "hot", "sour", "bright", "small", "kind", "dull", "wooden", "shy", "loud"]


def concept_names(rng: np.random.Generator, n: int) -> list[str]:
    """n distinct fictional concept names ("wumpus", "sterpus", ...)."""
    if n > len(SYLLABLES):
        raise ValueError(f"at most {len(SYLLABLES)} concepts per problem, asked for {n}")
    return [s + "pus" for s in rng.choice(SYLLABLES, size=n, replace=False)]


def random_dag(rng: np.random.Generator, nodes: list[int], branching: int) -> list[tuple[int, int]]:
    """Edges i -> j (j later in `nodes`): each node but the last gets up to `branching` children."""
    edges = []
    for i, node in enumerate(nodes[:-1]):
        later = nodes[i + 1:]
        for child in rng.choice(later, size=min(branching, len(later)), replace=False):
            edges.append((node, int(child)))
    return edges


def reachable(edges: list[tuple[int, int]], start: int) -> set[int]:
    seen, frontier = {start}, [start]
    while frontier:
        node = frontier.pop()
        for a, b in edges:
            if a == node and b not in seen:
                seen.add(b)
                frontier.append(b)
    return seen


def prosqa_problem(rng: np.random.Generator, n_concepts: int, depth: int, branching: int) -> dict:
    """"Is Tom a A or a B?" over a random DAG of "Every X is a Y." facts.

    The concepts split into the entity's side and a distractor side; edges never lead from the
    entity's side to the other, so the distractor is unreachable and the target (the end of a
    `depth`-hop walk from the entity's concept) is the one right answer. Steps are the walk.
    """
    names = concept_names(rng, n_concepts)
    own, other = list(range(n_concepts // 2 + 1)), list(range(n_concepts // 2 + 1, n_concepts))
    if len(own) <= depth or not other:
        raise ValueError(f"prosqa: n_concepts={n_concepts} is too small for depth={depth} (need > 2 * depth)")
    while True:
        edges = random_dag(rng, own, branching) + random_dag(rng, other, branching)
        # Distractor-side concepts may lead into the entity's side: a trap, never a path back.
        edges += [(int(rng.choice(other)), int(rng.choice(own[1:])))]
        path = [own[0]]
        while len(path) <= depth:
            children = [b for a, b in edges if a == path[-1] and b in own]
            if not children:
                break
            path.append(int(rng.choice(children)))
        if len(path) == depth + 1:
            break
    target, distractor = path[-1], int(rng.choice(other))
    entity = str(rng.choice(NAMES))
    facts = [f"Every {names[a]} is a {names[b]}." for a, b in edges]
    rng.shuffle(facts)
    options = [names[target], names[distractor]]
    rng.shuffle(options)
    question = " ".join(facts + [f"{entity} is a {names[path[0]]}.", f"Is {entity} a {options[0]} or a {options[1]}?"])
    steps = [f"{entity} is a {names[node]}." for node in path[1:]]
    return {"question": question, "steps": steps, "answer": f"{entity} is a {names[target]}."}


def prontoqa_problem(rng: np.random.Generator, hops: int, distractors: int) -> dict:
    """"True or false: Alex is (not) red." over a chain of `hops` "Every X is a Y." facts.

    Only the chain's last concept says whether its members are red. Each distractor adds a branch
    off the chain with another adjective (true of the entity, but not asked) and a concept outside
    the chain with the opposite property, so the answer follows from the chain alone.
    """
    names = concept_names(rng, hops + 1 + 2 * distractors)
    chain, branches, outsiders = names[: hops + 1], names[hops + 1: hops + 1 + distractors], names[hops + 1 + distractors:]
    entity = str(rng.choice(NAMES))
    adjective, *others = rng.choice(ADJECTIVES, size=1 + distractors, replace=False).tolist()
    holds, asked = bool(rng.integers(2)), bool(rng.integers(2))
    facts = [f"Every {a} is a {b}." for a, b in zip(chain, chain[1:])]
    facts.append(f"Every {chain[-1]} is {'' if holds else 'not '}{adjective}.")
    for branch, outsider, other in zip(branches, outsiders, others):
        facts.append(f"Every {chain[int(rng.integers(hops + 1))]} is a {branch}.")
        facts.append(f"Every {branch} is {'' if rng.integers(2) else 'not '}{other}.")
        facts.append(f"Every {outsider} is {'not ' if holds else ''}{adjective}.")
    rng.shuffle(facts)
    question = " ".join(facts + [f"{entity} is a {chain[0]}.",
                                 f"True or false: {entity} is {'' if asked else 'not '}{adjective}."])
    steps = [f"{entity} is a {c}." for c in chain[1:]] + [f"{entity} is {'' if holds else 'not '}{adjective}."]
    return {"question": question, "steps": steps, "answer": str(holds == asked)}


def generated(kind: str, n: int, seed: int, make) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return problem_frame([make(rng) for _ in range(n)], f"{kind}:generated(seed={seed})")


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
                          "a local file of the same shape, or use kind `prosqa`, `prontoqa` or `gsm_symbolic`")
    columns = {key: spec[f"{key}_column"] for key in ("question", "steps", "answer")}
    for key, column in columns.items():
        if column not in ds.column_names:
            raise ValueError(f"reasoning.{name}.{key}_column: '{column}' not in dataset columns {ds.column_names}")
    if spec.get("max_problems"):
        ds = ds.select(range(min(spec["max_problems"], len(ds))))
    problems = []
    for row in ds:
        steps = row[columns["steps"]]
        if isinstance(steps, str):
            steps = steps.split(spec["steps_separator"])
        problems.append({"question": row[columns["question"]], "steps": [s.strip() for s in steps if s.strip()],
                         "answer": extract_answer(str(row[columns["answer"]]))})
    return problem_frame(problems, f"hub:{spec.get('dataset') or spec['data_files']}")


def problem_frame(problems: list[dict], source: str) -> pd.DataFrame:
    df = pd.DataFrame(problems, columns=["question", "steps", "answer"])
    df.insert(0, "id", range(len(df)))
    df["source"] = source
    return df[REASONING_COLUMNS]


def build_reasoning(name: str, spec: dict, seed: int, split: str | None = None) -> pd.DataFrame:
    kind = spec["kind"]
    if kind == "prosqa":
        df = generated(kind, spec["n_problems"], seed,
                       lambda rng: prosqa_problem(rng, spec["n_concepts"], spec["depth"], spec["branching"]))
    elif kind == "prontoqa":
        df = generated(kind, spec["n_problems"], seed,
                       lambda rng: prontoqa_problem(rng, spec["hops"], spec["distractors"]))
    elif kind == "gsm_symbolic":
        df = gsm_symbolic(spec["n_problems"], seed)
    elif kind == "hub":
        df = hub_reasoning(spec, name, split)
    else:
        raise ValueError(f"reasoning.{name}.kind: unknown kind '{kind}' (prosqa, prontoqa, gsm_symbolic or hub)")
    if not df["steps"].map(len).any():
        raise ValueError(
            f"reasoning dataset '{name}' has no reasoning steps in any problem; latent reasoning replaces "
            f"steps, so point reasoning.{name}.steps_column (or steps_separator) at the worked solutions"
        )
    return df


def reasoning_splits(name: str, spec: dict, seed: int) -> dict[str, pd.DataFrame]:
    """train/val/test: a hub dataset's own splits where `hub_splits` names them, else seeded random ones."""
    if spec["kind"] == "hub" and spec.get("hub_splits") and not spec.get("data_files"):
        return {split: build_reasoning(name, spec, seed, spec["hub_splits"][split]) for split in REASONING_SPLITS}
    return split_problems(build_reasoning(name, spec, seed), spec["val_fraction"], spec["test_fraction"], seed, name)


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
    df = pd.read_parquet(path)
    if list(df.columns) != REASONING_COLUMNS:
        raise ValueError(f"{path}: columns {list(df.columns)}, expected {REASONING_COLUMNS}")
    df["steps"] = df["steps"].map(list)
    return df
