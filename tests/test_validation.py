"""Bad input gets one message naming the file or key and the fix, before any job runs: each case a
new user ran into (unknown keys, partial configs, override values, empty grids, YAML syntax,
missing or broken data files, damaged outputs of an earlier run, SLURM placeholders)."""

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from runner import snakemake
from safetensors.torch import save_file

from soft_tokens.core.io import atomic_dir, atomic_write_json, write_parquet
from soft_tokens.validation import (
    ConfigError,
    cached_hasher,
    check_data_files,
    check_placeholders,
    check_writable,
    damage,
    damaged_outputs,
    read_yaml,
    repair,
    typed_overrides,
    validate,
    with_base,
)
from soft_tokens.workflow import check_config

ROOT = Path(__file__).resolve().parents[1]
SMOKE = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())


def smoke():
    return copy.deepcopy(SMOKE)


def snakemake_dry_run(config_path, directory, *args, snakefile=ROOT / "Snakefile"):
    config = ["--configfile", str(config_path)] if config_path else []
    run = snakemake("-n", "--directory", str(directory), *config, *args, snakefile=snakefile)
    return run.returncode, run.stdout + run.stderr


def validated(config) -> dict:
    validate(config, "smoke.yaml")
    return config


def rejected(config) -> str:
    with pytest.raises(ConfigError) as caught:
        validate(config, "my.yaml")
    return str(caught.value)


@pytest.mark.parametrize("section,name,key,meant", [("models", "tiny-llama", "hidden_sise", "hidden_size"),
                                                    ("corpora", "embedded_prose", "passage_word", "passage_words")])
def test_an_unknown_key_in_a_model_or_corpus_is_named_with_the_key_it_resembles(section, name, key, meant):
    config = smoke()
    config[section][name][key] = 3
    message = rejected(config)
    assert message.startswith(f"my.yaml: unknown key(s) ['{key}'] under {section}.{name} ('{key}' -> did you mean "
                              f"'{meant}'?)")


def test_an_unknown_top_level_key_is_one_short_message_not_the_schema():
    config = smoke()
    config["coconutt"] = {}
    message = rejected(config)
    assert "unknown key(s) ['coconutt'] under the top level ('coconutt' -> did you mean 'coconut'?)" in message
    assert len(message.splitlines()) == 1 and "Failed validating" not in message


def test_a_partial_config_is_told_how_to_name_a_base():
    message = rejected({"cramming": {"models": ["tiny-llama"], "corpora": ["x"], "lengths": [8]}})
    assert message.startswith("my.yaml lacks the required top-level key(s) ['workdir', 'models', 'corpora']")
    assert "start it with `base: config/config.yaml` (and its own `workdir:`)" in message
    assert "--config seed=7 'hrpo={steps: 40}'" in message


def test_a_config_on_a_base_takes_every_key_it_does_not_set_from_the_base():
    derived = with_base({"base": "config/smoke.yaml", "workdir": "runs/mine", "hrpo": {"steps": 40},
                         "models": {"tiny-llama": {"num_layers": 3}}}, "mine.yaml")
    expected = smoke()
    expected["workdir"] = "runs/mine"
    expected["hrpo"]["steps"] = 40
    expected["models"]["tiny-llama"]["num_layers"] = 3  # mappings merge key by key: the model keeps its size
    assert derived == expected
    assert with_base({"base": "config/smoke.yaml", "workdir": "w", "cramming": {"lengths": [4]}},
                     "m.yaml")["cramming"]["lengths"] == [4]  # a list replaces the base's, as --config's does


def test_a_base_chain_resolves_in_order(tmp_path):
    middle = tmp_path / "middle.yaml"
    middle.write_text("base: config/smoke.yaml\nworkdir: runs/middle\nseed: 7\nhrpo: {steps: 5}\n")
    derived = with_base({"base": str(middle), "workdir": "runs/top", "hrpo": {"steps": 6}}, "top.yaml")
    assert (derived["seed"], derived["hrpo"]["steps"], derived["workdir"]) == (7, 6, "runs/top")
    assert derived["hrpo"]["group_size"] == SMOKE["hrpo"]["group_size"]


def test_a_bad_base_is_named_with_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"^m.yaml: takes its base's workdir \('runs/smoke', from config/smoke.yaml\), "
                                          r"so its outputs would overwrite the base run's; give it its own"):
        with_base({"base": "config/smoke.yaml", "hrpo": {"steps": 4}}, "m.yaml")
    with pytest.raises(ConfigError, match=r"^m.yaml: base: config/nope.yaml does not exist \(looked for "
                                          rf"{ROOT}/config/nope.yaml; a relative base is read from the repository root"):
        with_base({"base": "config/nope.yaml", "workdir": "w"}, "m.yaml")
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"base: {loop}\nworkdir: w\n")
    with pytest.raises(ConfigError, match="leads back to itself"):
        with_base({"base": str(loop), "workdir": "v"}, "m.yaml")


def test_nested_config_overrides_are_typed_by_the_schema():
    """Snakemake reads `--config 'hrpo={steps: 40}'` with YAML's base loader: every leaf a string."""
    given = {"hrpo": {"steps": "40", "lr_lora": "1.0e-4", "chat_template": "false", "models": ["m"],
                      "lora_r": "8", "marker": "123"},
             "models": {"m": {"source": "tiny", "hidden_size": "32"}},
             "cramming": {"lengths": ["4", "8"], "overrides": {"m": {"n_mem": ["2"]}}}}
    assert typed_overrides(given) == {
        "hrpo": {"steps": 40, "lr_lora": 1e-4, "chat_template": False, "models": ["m"], "lora_r": 8, "marker": "123"},
        "models": {"m": {"source": "tiny", "hidden_size": 32}},
        "cramming": {"lengths": [4, 8], "overrides": {"m": {"n_mem": [2]}}}}
    assert typed_overrides({"hrpo": {"steps": "x"}}) == {"hrpo": {"steps": "x"}}  # left for the schema to reject


def test_a_three_line_config_and_a_nested_override_run_as_the_readme_shows(tmp_path):
    """The run's effective config (results/config.yaml) is what the job settings are made from."""
    path = tmp_path / "hrpo40.yaml"
    path.write_text("base: config/smoke.yaml\nworkdir: runs/hrpo40\nhrpo: {steps: 40}\n")
    for name, args in (("derived", ["--configfile", str(path)]),
                       ("nested", ["--configfile", str(ROOT / "config" / "smoke.yaml"), "--config",
                                   "hrpo={steps: 40, lr_lora: 1.0e-4}"])):
        run = snakemake("results/config.yaml", "--cores", "1", "--directory", str(tmp_path / name), *args)
        assert run.returncode == 0, run.stdout + run.stderr
        used = yaml.safe_load((tmp_path / name / "results" / "config.yaml").read_text())
        assert used["hrpo"]["steps"] == 40 and "base" not in used
        assert used["hrpo"]["group_size"] == SMOKE["hrpo"]["group_size"] and used["cramming"] == \
            validated(smoke())["cramming"]
    assert used["hrpo"]["lr_lora"] == 1e-4


@pytest.mark.parametrize("section,name,override,expected", [
    ("cramming", "tiny-llama", {"lengths": ["eight"]}, "cramming.overrides.tiny-llama.lengths[0]: 'eight' is not of "
                                                       "type 'integer'"),
    ("cramming", "tiny-llama", {"n_mem": [0]}, "cramming.overrides.tiny-llama.n_mem[0]: 0 is less than the minimum "
                                               "of 1"),
    ("coconut", "prosqa", {"c_thought": 0}, "coconut.overrides.prosqa.c_thought: 0 is less than the minimum of 1"),
    ("coconut", "prosqa", {"lr": "fast"}, "coconut.overrides.prosqa.lr: 'fast' is not of type 'number'"),
    ("coconut", "prosqa", {"c_thougth": 2}, "unknown key(s) ['c_thougth'] under coconut.overrides.prosqa "
                                            "('c_thougth' -> did you mean 'c_thought'?)"),
])
def test_override_values_are_checked_as_the_keys_they_override(section, name, override, expected):
    config = smoke()
    config[section].setdefault("overrides", {})[name] = override
    assert expected in rejected(config)


def test_overrides_get_no_defaults_filled_in():
    """An override holds what the user wrote: a default in it would override the section's own value."""
    config = smoke()
    validate(config, "my.yaml")
    assert config["coconut"]["overrides"] == {"gsm_symbolic": {"c_thought": 2, "finetune": "lora", "start": "cot",
                                                               "select_best": True, "uniform_prob": 0.5}}


def test_a_grid_that_leaves_a_model_no_cram_job_says_which_key_to_change():
    config = smoke()
    config["cramming"]["n_mem"] = [64]
    validate(config, "my.yaml")
    with pytest.raises(ValueError, match=r"cramming: tiny-llama has no cram job left, since every n_mem \[64\] exceeds "
                                         r"every length \[8\] .*; lower n_mem or raise lengths under `cramming`$"):
        check_config(config)
    config = smoke()
    config["cramming"]["overrides"] = {"tiny-llama": {"lengths": [4], "n_mem": [5]}}
    validate(config, "my.yaml")
    with pytest.raises(ValueError, match="under `cramming.overrides.tiny-llama`"):
        check_config(config)
    config = smoke()
    config["cramming"].update(variants=["bos"], optimizers=["fast"])  # fast places BOS first: bos is base
    validate(config, "my.yaml")
    with pytest.raises(ValueError, match="are only `bos`, the same job as `base`; add `base` to cramming.variants"):
        check_config(config)


@pytest.mark.parametrize("section", ["coconut", "pooler", "hrpo"])
def test_a_reasoning_track_with_models_and_no_datasets_says_so(section):
    config = smoke()
    config[section]["datasets"] = []
    validate(config, "my.yaml")
    with pytest.raises(ValueError, match=rf"^{section}.models is set but {section}.datasets is empty"):
        check_config(config)


def test_a_yaml_syntax_error_names_the_file_line_and_column(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("workdir: runs/x\nmodels:\n  tiny: {source: tiny\ncorpora: {}\n")
    with pytest.raises(ConfigError, match=rf"^{path}, line 4, column 8: not valid YAML \(.*\); fix it there"):
        read_yaml(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="holds list, not a mapping of keys"):
        read_yaml(path)


def test_the_check_command_answers_a_bad_path_with_one_line(tmp_path):
    (tmp_path / "binary.yaml").write_bytes(b"\x00\xff\xfe")
    for path, said in ((tmp_path / "missing.yaml", "does not exist"), (tmp_path, "is a folder"),
                       (tmp_path / "binary.yaml", "not a text file (byte 1 is not UTF-8)")):
        run = subprocess.run([sys.executable, "-m", "soft_tokens.validation", str(path)], capture_output=True,
                             text=True, cwd=ROOT, timeout=120)
        assert run.returncode == 1 and run.stderr.startswith(f"{path}: {said}") and run.stderr.count("\n") == 1


@pytest.mark.parametrize("section", ["models", "corpora", "reasoning"])
def test_a_name_a_path_or_latex_cannot_take_is_refused_by_the_schema(section):
    config = smoke()
    config.setdefault(section, {})["org/tiny"] = next(iter(config[section].values()))
    assert rejected(config) == (f"my.yaml: {section}: the name 'org/tiny' cannot be used. A name becomes a folder and "
                                "a table label, so it holds only letters, digits, '.', '_' and '-' (a hub id such as "
                                "org/model goes in the entry's hf_id or dataset, not in its name); rename it")


def test_the_check_command_names_the_line_snakemake_does_not(tmp_path):
    """Snakemake reads a --configfile before the workflow starts and names no file or line on a YAML
    error; `python -m soft_tokens.validation` does."""
    path = tmp_path / "my.yaml"
    path.write_text((ROOT / "config" / "smoke.yaml").read_text().replace("seed: 1337", "seed: [1337"))
    run = subprocess.run([sys.executable, "-m", "soft_tokens.validation", str(path)], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert run.returncode == 1 and run.stderr.startswith(f"{path}, line ")
    run = subprocess.run([sys.executable, "-m", "soft_tokens.validation", "config/smoke.yaml"], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "config/smoke.yaml: valid"


def test_a_yaml_error_in_the_default_config_names_its_line(tmp_path):
    """`make results` reads config/config.yaml through the workflow, which names the line."""
    copy_dir = tmp_path / "workflow"
    copy_dir.mkdir()
    shutil.copy(ROOT / "Snakefile", copy_dir)
    for part in ("rules", "config", "report", "workflow", "envs", "src"):
        shutil.copytree(ROOT / part, copy_dir / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    default = copy_dir / "config" / "config.yaml"
    default.write_text(default.read_text().replace("seed: 1337", "seed: 1337: 7"))
    code, out = snakemake_dry_run(None, tmp_path / "run", snakefile=copy_dir / "Snakefile")
    assert code != 0 and f"{default}, line 5, column 11: not valid YAML" in out


def test_data_files_that_are_missing_or_not_parquet_name_the_key(tmp_path):
    config = {"corpora": {"mine": {"kind": "hub", "dataset": "x/y", "data_files": "texts.parquet"}}}
    with pytest.raises(ConfigError, match=rf"corpora.mine.data_files: texts.parquet does not exist \(looked for "
                                          rf"{tmp_path}/texts.parquet: a relative path is read from {tmp_path}"):
        check_data_files(copy.deepcopy(config), tmp_path, tmp_path / "runs" / "mine")
    (tmp_path / "texts.parquet").write_text("id,text\n0,hello\n")
    with pytest.raises(ConfigError, match=r"corpora.mine.data_files: .*texts.parquet is not a readable parquet file "
                                          r"\(no parquet header or footer\)"):
        check_data_files(copy.deepcopy(config), tmp_path, tmp_path / "runs" / "mine")
    pd.DataFrame({"text": ["hello"]}).to_parquet(tmp_path / "texts.parquet")
    check_data_files(config, tmp_path, tmp_path / "runs" / "mine")
    # Named from the run folder, where jobs run, and relative: a moved repository changes no job's parameters.
    assert config["corpora"]["mine"]["data_files"] == "../../texts.parquet"


def test_a_data_file_that_fails_to_load_names_the_key_and_the_file(tmp_path):
    from soft_tokens.data.corpora import hub_corpus

    path = tmp_path / "texts.jsonl"
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match=rf"corpora.pg19.data_files: could not read {path} as json \(.*\); point it "
                                         "at a json file of the dataset's shape"):
        hub_corpus("pg19", "train", "text", "pg19", str(path))


def write_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"parquet": folder / "a.parquet", "safetensors": folder / "b.safetensors", "pt": folder / "c.pt"}
    pd.DataFrame({"x": range(50)}).to_parquet(paths["parquet"])
    save_file({"w": torch.arange(10.0), "v": torch.ones(3)}, paths["safetensors"])
    torch.save({"w": torch.ones(4)}, paths["pt"])
    return paths


@pytest.mark.parametrize("kind", ["parquet", "safetensors", "pt"])
def test_damage_finds_truncated_and_garbage_files_and_passes_whole_ones(tmp_path, kind):
    path = write_files(tmp_path)[kind]
    assert damage(path) is None
    whole = path.read_bytes()
    path.write_bytes(whole[:-3])
    assert damage(path) is not None
    path.write_bytes(b"garbage " * 10)
    assert damage(path) is not None


def test_a_damaged_file_costs_only_the_piece_written_whole_that_holds_it(tmp_path):
    """What is removed: an output file; a folder written whole (its checksums) that holds the file; in a
    half-done job's folder only the piece (a sample's files, a stage), or the folder when its fingerprint
    is damaged; in a finished folder a job resumes into, the output goes back to half-done work without
    the piece, so the job redoes only that piece."""
    produced = {"resources/models/tiny", "results/x.parquet", "results/coconut/d/coconut_1"}.__contains__
    for unit in ("resources/models/tiny", "results/c/cot.partial/stage1", "results/coconut/d/coconut_1/stage2"):
        with atomic_dir(tmp_path / unit) as tmp:
            (tmp / "model.safetensors").write_bytes(b"w")
    (tmp_path / "results/coconut/d/coconut_1/fingerprint.json").write_text("{}")

    def fix(rel):
        return repair(Path(rel), tmp_path, produced)

    assert fix("results/x.parquet") == "rm -r results/x.parquet"
    assert fix("results/other.parquet") == "rm -r results/other.parquet"
    assert fix("resources/models/tiny/model.safetensors") == "rm -r resources/models/tiny"
    assert fix("results/c/cot.partial/stage1/model.safetensors") == "rm -r results/c/cot.partial/stage1"
    assert fix("results/c/cram.parquet.partial/sample_3.json") == "rm -f results/c/cram.parquet.partial/sample_3.*"
    assert fix("results/c/cram.parquet.partial/fingerprint.json") == "rm -r results/c/cram.parquet.partial"
    assert fix("results/coconut/d/coconut_1/stage2/model.safetensors") == (
        "mv results/coconut/d/coconut_1 results/coconut/d/coconut_1.partial && "
        "rm -r results/coconut/d/coconut_1.partial/stage2")


def flip_middle_byte(path: Path) -> None:
    """A few bytes changed inside a file, its header and footer intact (a bad sector, a bad copy)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_bytes_changed_inside_an_output_are_found_though_its_framing_is_intact(tmp_path):
    write_parquet(pd.DataFrame({"x": range(1000)}), tmp_path / "results" / "t.parquet")
    with atomic_dir(tmp_path / "resources" / "models" / "tiny") as tmp:
        (tmp / "tokenizer.json").write_text("{}")
        (tmp / "config.json").write_text("{}")
    flip_middle_byte(tmp_path / "results" / "t.parquet")
    assert damage(tmp_path / "results" / "t.parquet") is None  # the framing alone cannot tell
    (tmp_path / "resources" / "models" / "tiny" / "tokenizer.json").unlink()
    found = damaged_outputs(tmp_path, {"results/t.parquet", "resources/models/tiny"}.__contains__)
    assert found == {"rm -r resources/models/tiny": "resources/models/tiny: tokenizer.json is missing",
                     "rm -r results/t.parquet": "results/t.parquet: its bytes were changed after it was written "
                                                "(its sha256 differs from the one recorded)"}


def test_a_truncated_piece_of_half_done_work_is_found(tmp_path):
    partial = tmp_path / "results" / "c" / "len8.parquet.partial"
    atomic_write_json(partial / "fingerprint.json", {"params": {}})
    atomic_write_json(partial / "sample_0.json", {"tf": 1.0})
    atomic_write_json(partial / "sample_1.json", {"tf": 0.5})
    (partial / "sample_1.json").write_text('{"tf": 0.')
    found = damaged_outputs(tmp_path, lambda path: False)
    assert found == {"rm -f results/c/len8.parquet.partial/sample_1.*": "results/c/len8.parquet.partial/sample_1.json: "
                     "its bytes were changed after it was written (its sha256 differs from the one recorded)"}
    (partial / "sample_1.json.sha256").unlink()  # as written before checksums: its framing tells
    found = damaged_outputs(tmp_path, lambda path: False)
    assert found["rm -f results/c/len8.parquet.partial/sample_1.*"].startswith(
        "results/c/len8.parquet.partial/sample_1.json: not readable JSON")


def test_the_scan_hashes_a_file_again_only_once_it_changed(tmp_path, monkeypatch):
    import soft_tokens.validation as validation

    write_parquet(pd.DataFrame({"x": range(10)}), tmp_path / "results" / "t.parquet")
    (tmp_path / ".snakemake").mkdir()
    hashed = []
    monkeypatch.setattr(validation, "sha256", lambda path: hashed.append(path.name) or f"sum of {path.read_bytes()}")
    for _ in range(2):
        hasher = cached_hasher(tmp_path / ".snakemake" / "sums.json")
        hasher(tmp_path / "results" / "t.parquet")
        hasher.save()
    assert hashed == ["t.parquet"]
    (tmp_path / "results" / "t.parquet").write_bytes(b"other")
    assert cached_hasher(tmp_path / ".snakemake" / "sums.json")(tmp_path / "results" / "t.parquet") == "sum of b'other'"


def test_a_read_only_run_folder_is_named_before_any_job(tmp_path, monkeypatch):
    (tmp_path / "results" / "cramming").mkdir(parents=True)
    check_writable(tmp_path)
    check_writable(tmp_path / "not" / "yet")  # a first run: its parent must be writable
    # As a read-only mount answers (chmod does not stop root, who runs some CI containers).
    monkeypatch.setattr("os.access", lambda path, mode: not str(path).endswith("cramming"))
    with pytest.raises(ConfigError, match=rf"1 folder\(s\) of the run cannot be written \(read-only; "
                                          rf"{tmp_path}/results/cramming\), so its jobs cannot write their outputs\. "
                                          rf"Make them writable \(chmod -R u\+w {tmp_path}\)"):
        check_writable(tmp_path)


def test_damaged_outputs_are_found_in_resources_and_results_only(tmp_path):
    good = write_files(tmp_path / "results" / "ok")
    bad = write_files(tmp_path / "resources" / "models" / "tiny")
    bad["safetensors"].write_bytes(bad["safetensors"].read_bytes()[:-1])
    elsewhere = write_files(tmp_path / "logs")
    elsewhere["parquet"].write_bytes(b"nope")
    (tmp_path / "results" / ".x.parquet.tmp").write_bytes(b"half")  # a killed atomic write: ignored
    half_saved = write_files(tmp_path / "results" / "cot.partial" / ".stage1.tmp")  # a model folder being saved
    half_saved["safetensors"].write_bytes(b"half")
    found = damaged_outputs(tmp_path, {"resources/models/tiny"}.__contains__)
    assert list(found) == ["rm -r resources/models/tiny"] and "b.safetensors: " in found["rm -r resources/models/tiny"]
    assert good["parquet"].exists()


def test_a_damaged_output_stops_the_run_before_any_job_with_the_command_to_rebuild(tmp_path):
    data = tmp_path / "resources" / "data"
    data.mkdir(parents=True)
    pd.DataFrame({"x": [1]}).to_parquet(data / "embedded_prose.parquet")
    (data / "embedded_prose.parquet").write_bytes((data / "embedded_prose.parquet").read_bytes()[:-8])
    code, out = snakemake_dry_run(ROOT / "config" / "smoke.yaml", tmp_path)
    assert code != 0
    assert "resources/data/embedded_prose.parquet: no parquet header or footer" in out
    assert f"  cd {tmp_path}\n  rm -r resources/data/embedded_prose.parquet" in out


def test_slurm_placeholders_stop_the_run_before_any_job_is_submitted(tmp_path):
    """A dry run (as the README's cluster call is tested) submits nothing and passes; a real run stops
    before its first submission."""
    run = snakemake("--workflow-profile", str(ROOT / "profiles" / "slurm"), "--configfile",
                    str(ROOT / "config" / "smoke.yaml"), "--directory", str(tmp_path))
    assert run.returncode != 0
    assert "still holds placeholder(s) (default-resources slurm_partition: <your-partition>, default-resources " \
           "slurm_account: <your-account>)" in run.stdout + run.stderr
    assert not (tmp_path / "resources").exists() and not (tmp_path / "results").exists()
    check_placeholders({"default-resources slurm_partition": "gpu", "set-resources cram gpu": 1}, "the profile")


def test_an_unknown_key_stops_snakemake_with_one_message(tmp_path):
    config = smoke()
    config["models"]["tiny-llama"]["hidden_sise"] = 3
    path = tmp_path / "my.yaml"
    path.write_text(yaml.safe_dump(config))
    code, out = snakemake_dry_run(path, tmp_path)
    assert code != 0 and f"{path}: unknown key(s) ['hidden_sise'] under models.tiny-llama" in out
    assert "Failed validating" not in out and len(out.splitlines()) < 12


def test_shipped_configs_pass_the_check_and_keep_their_overrides():
    for name in ("config.yaml", "smoke.yaml", "paper.yaml"):
        config = read_yaml(ROOT / "config" / name)
        overrides = json.loads(json.dumps(config.get("coconut", {}).get("overrides", {})))
        validate(config, name)
        check_config(config)
        assert config["coconut"]["overrides"] == overrides


def test_the_shared_lora_and_resources_blocks_are_checked_filled_and_named_like_a_sections_own_keys():
    config = smoke()
    validate(config, "my.yaml")
    for section in ("coconut", "pooler", "hrpo"):  # defaults from the one LoRA block ($defs/lora)
        assert (config[section]["lora_r"], config[section]["lora_alpha"], config[section]["lora_dropout"]) == (16, 32, 0.0)
        assert (config[section]["mem_mb"], config[section]["runtime"]) == (16000, 240)  # $defs/resources
    config = smoke()
    config["coconut"]["runtime"] = 0
    assert rejected(config) == ("my.yaml: coconut.runtime: 0 is less than the minimum of 1 "
                                "(config/README.md describes the key)")
    config = smoke()
    config["pooler"]["lora_rr"] = 8
    assert rejected(config).startswith("my.yaml: unknown key(s) ['lora_rr'] under pooler ('lora_rr' -> did you mean "
                                       "'lora_r'?)")
    config = smoke()
    config["hrpo"]["lora_r"] = 0
    assert rejected(config) == "my.yaml: hrpo.lora_r: 0 is less than the minimum of 1 (config/README.md describes the key)"
