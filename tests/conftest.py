"""Shared fixtures: an isolated cache per test session, tiny random models built from a config."""

import json
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Every test session gets its own cache; the converted embedded model is shared with the repo's
    cache/ so the one-off GGUF conversion is not repeated on every run."""
    root = tmp_path_factory.mktemp("nrcache")
    shared = REPO / "cache" / "models"
    shared.mkdir(parents=True, exist_ok=True)
    (root / "models").symlink_to(shared, target_is_directory=True)
    old = os.environ.get("NEURONRANK_CACHE")
    os.environ["NEURONRANK_CACHE"] = str(root)
    # the app confines paths to allowed folders: the tests' temporary files live here
    os.environ["NEURONRANK_ALLOWED_DIRS"] = os.pathsep.join([str(tmp_path_factory.getbasetemp()), str(REPO)])
    yield root
    if old is None:
        os.environ.pop("NEURONRANK_CACHE", None)
    else:
        os.environ["NEURONRANK_CACHE"] = old


FAMILIES = {
    "llama": dict(model_type="llama", hidden_act="silu"),
    "mistral": dict(model_type="mistral", hidden_act="silu", sliding_window=None),
    "qwen2": dict(model_type="qwen2", hidden_act="silu"),
    "qwen3": dict(model_type="qwen3", hidden_act="silu", head_dim=8),
    "gemma": dict(model_type="gemma", hidden_activation="gelu_pytorch_tanh", head_dim=8),
}


def make_tiny(family="llama", vocab=96, layers=2, hidden=32, inter=48, seed=0):
    from transformers import AutoConfig, AutoModelForCausalLM

    kw = dict(FAMILIES[family])
    model_type = kw.pop("model_type")
    cfg = AutoConfig.for_model(model_type, vocab_size=vocab, hidden_size=hidden, intermediate_size=inter,
                               num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                               max_position_embeddings=256, **kw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    # random-init std 0.02 makes every activation tiny; widen so signs and magnitudes vary
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.3)
    return model


@pytest.fixture
def tiny():
    return make_tiny()


@pytest.fixture
def tiny_windows():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 96, (6, 16), generator=g)


def write_tiny_model_dir(path: Path, vocab: int = 128, family: str = "llama", seed: int = 0, layers: int = 2,
                         inter: int = 48) -> Path:
    """A tiny random model plus a small BPE tokenizer trained on a few lines, saved like a hub model."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator([SAMPLE_TEXT] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    model = make_tiny(family, vocab=max(vocab, tok.get_vocab_size()), seed=seed, layers=layers, inter=inter)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


SAMPLE_TEXT = (
    "The quick brown fox jumps over the lazy dog. A neuron fires when the pattern it detects appears. "
    "Markets rose on Monday as investors welcomed news of lower inflation and steady growth. "
    "The team scored twice in the second half to win the cup final in front of a home crowd. "
) * 3


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return write_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def text_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("text") / "calib.txt"
    p.write_text("\n\n".join([SAMPLE_TEXT] * 20))
    return p


@pytest.fixture
def local_task(tmp_path):
    """A local lm-eval task (YAML + JSONL): four yes/no questions, never the network."""
    data = tmp_path / "tiny_yesno.jsonl"
    rows = [{"question": f"Is the fox {w}?", "label": i % 2} for i, w in enumerate(["quick", "brown", "lazy", "red"])]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "tiny_yesno.yaml").write_text(f"""task: nr_tiny_yesno
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}} Answer:"
doc_to_target: label
doc_to_choice: ["yes", "no"]
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")
    return tmp_path
