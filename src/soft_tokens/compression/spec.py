"""The converter, e* and compressor track as the workflow sees it, free of torch: its names, the keys
each of its jobs reads, its report sections and its config checks."""

from soft_tokens.vocabulary import RUNTIME, canonical, check_names

CONVERTER_ARCHS = ("linear", "mlp")
COMPRESSOR_ARCHS = ("hyper", "qattn")
# Where the track's sections stand in the report (soft_tokens.workflow finds every spec).
ORDER = 20
# Report section -> its figures (each captioned once, in report/<figure>.rst).
SECTIONS = {"converter": (), "compressor": ("compressor_ce",)}
ENUMS = ((("converter", "archs"), CONVERTER_ARCHS), (("recursive_demo", "arch"), CONVERTER_ARCHS),
         (("compressor", "archs"), COMPRESSOR_ARCHS))
READS = {
    "extract_pairs": ("converter", ("layers", "bos", "max_tokens", "batch_size"), ("seed", *RUNTIME)),
    "train_converter": ("converter", ("hidden_dim", "epochs", "lr", "weight_decay", "batch_size", "val_fraction"),
                        ("seed",)),
    "eval_converter": ("converter", ("val_fraction", "top_k"), ("seed", *RUNTIME)),
    "recursive_demo": ("recursive_demo", ("layer", "arch", "n_passages", "context_tokens", "continuation_tokens",
                                          "prompt", "max_new_tokens"), RUNTIME),
    "build_estar": ("estar", ("train_contexts", "held_out_contexts", "estar_train_contexts", "ctx_len", "follow_len",
                              "k", "context_layer", "match_layer", "match_weight", "match_loss", "lr", "max_steps",
                              "batch_size"), ("seed", *RUNTIME)),
    "train_compressor": ("compressor", ("width", "heads", "layers", "ffn_dim", "epochs", "batch_size", "lr",
                                        "weight_decay", "regression_weight", "kl_weight", "temperature",
                                        "hidden_weight", "attention_weight", "match_layers"), ("seed", *RUNTIME)),
    "eval_compressor": ("compressor", ("top_k",), RUNTIME),
}
# The keys the compressor section's opening paragraph states (its summary rule's parameters), so that
# editing anything else, a scheduler resource above all, does not rewrite the report.
COMPRESSOR_PROTOCOL = {"estar": ("corpus", "ctx_len", "follow_len", "k", "max_steps", "train_contexts",
                                 "held_out_contexts", "estar_train_contexts"), "compressor": ("epochs",)}


def sections(config: dict) -> dict:
    on = {"converter": config["converter"]["models"], "compressor": config["estar"]["models"]}
    return {name: figures for name, figures in SECTIONS.items() if on[name]}


def check(config: dict) -> None:
    """Names defined, and a recursive demo that reads a converter the grid trains."""
    check_names(config, "converter.models", config["converter"]["models"], "models")
    check_names(config, "estar.models", config["estar"]["models"], "models")
    check_names(config, "estar.corpus", [config["estar"]["corpus"]] if config["estar"]["models"] else [], "corpora")
    demo, conv = config["recursive_demo"], config["converter"]
    if conv["models"]:
        for key, value, allowed in (("layer", demo["layer"], conv["layers"]), ("arch", demo["arch"], conv["archs"]),
                                    ("corpus", demo["corpus"], list(config["corpora"]))):
            if value not in allowed:
                raise ValueError(f"recursive_demo.{key}: {value!r} is not among {allowed} (converter.layers, "
                                 "converter.archs or corpora)")


def compressor_protocol(config: dict) -> dict:
    return canonical({k: config[section][k] for section, keys in COMPRESSOR_PROTOCOL.items() for k in keys})
