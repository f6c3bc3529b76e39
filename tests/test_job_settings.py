"""Job settings: fields by source, one error naming every field that does not fit, read-only, and the
record of which fields a job read."""

import dataclasses
import json
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import yaml
from runner import SMOKE

from soft_tokens.core import job_settings as module
from soft_tokens.core.job_settings import (
    DERIVED,
    RECORD,
    TOP,
    WILDCARD,
    Lora,
    OnDevice,
    derived,
    job_settings,
    top,
    wildcard,
)
from soft_tokens.validation import validate
from soft_tokens.workflow import job_params


@dataclass(frozen=True)
class Toy(OnDevice):
    SECTION = "toy"
    model: str = wildcard()
    seed: int = top()
    lr: float
    layers: list[int]
    max_tokens: int | None
    schedule: dict = derived()


PARAMS = dict(model="m", seed=1, device="cpu", dtype="float32", lr=1, layers=[1, 2], max_tokens=None, schedule={})


def test_fields_are_sorted_by_where_their_values_come_from():
    assert Toy.keys() == ("lr", "layers", "max_tokens")
    assert Toy.keys(TOP) == ("device", "dtype", "seed")
    assert Toy.keys(WILDCARD) == ("model",) and Toy.keys(DERIVED) == ("schedule",)
    assert Lora.keys() == ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")


def test_built_settings_hold_the_params_and_are_read_only():
    settings = Toy.build(PARAMS)
    assert settings.lr == 1 and settings.max_tokens is None and settings.params() == PARAMS
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.lr = 0.5
    assert Toy.build({**PARAMS, "max_tokens": 8}).max_tokens == 8


def test_one_error_names_every_missing_unknown_and_mistyped_field_and_the_spec():
    params = {**{k: v for k, v in PARAMS.items() if k != "lr"}, "epochs": 3, "seed": "1", "layers": 2,
              "max_tokens": True}
    with pytest.raises(TypeError) as error:
        Toy.build(params)
    assert str(error.value) == (
        "test_job_settings.Toy does not fit the job's params: `lr` is missing; `epochs` is not a field; "
        "`seed` is '1', not int; `layers` is 2, not list[int]; `max_tokens` is True, not int | None "
        "(the spec's fields are what soft_tokens.workflow.job_params gives the job: change both through the spec)")


def test_a_job_records_the_fields_it_read_when_it_ends(tmp_path, monkeypatch):
    monkeypatch.setenv(RECORD, str(tmp_path / "reads"))
    monkeypatch.setattr(module, "_reads", None)
    ended = []
    monkeypatch.setattr("atexit.register", ended.append)
    settings = job_settings(SimpleNamespace(rule="toy_rule", params=SimpleNamespace(job=PARAMS)), Toy)
    settings.lr, settings.params()  # params() is the fingerprint, not a read
    ended[0]()
    [record] = (tmp_path / "reads").glob("toy_rule.*.json")
    assert json.loads(record.read_text()) == ["lr"]


def test_a_config_value_that_does_not_fit_a_jobs_settings_fails_while_the_dag_is_built():
    """job_params builds the settings, so a dry run checks every job of a config (the schema and a spec
    that disagree show there, before any job is submitted)."""
    config = yaml.safe_load(SMOKE.read_text())
    validate(config, str(SMOKE))
    wildcards = {"model": "tiny-llama", "layer": "1", "arch": "mlp"}
    assert job_params(config, "train_converter", wildcards)["hidden_dim"] == config["converter"]["hidden_dim"]
    config["converter"]["hidden_dim"] = "wide"
    with pytest.raises(TypeError, match="TrainConverter does not fit the job's params: `hidden_dim` is 'wide', not int"):
        job_params(config, "train_converter", wildcards)
