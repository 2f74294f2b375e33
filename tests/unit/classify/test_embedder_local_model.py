"""Any local sentence-transformers model, multilingual ones included: the ONNX backend reproduces what
sentence-transformers itself computes, reading the token limit, pooling and prompt from the model's own files.

The model is a tiny random XLM-RoBERTa (the architecture of multilingual-e5 and the multilingual MiniLM/mpnet
models) with a SentencePiece-style tokenizer trained here, saved by sentence-transformers; nothing is fetched.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from classify.embedder import EmbedderError, load_embedder, model_languages, resolve_model_path
from classify.onnx_backend import read_st_config

TEXTS = ["Truce holds in Aleppo", "Le cessez-le-feu tient à Alep", "وقف إطلاق النار صامد في حلب",
         "Перемирие в Алеппо", "", "word " * 400]
MAX_SEQ = 96


def _build(target: Path) -> Path:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import models as st_models
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(TEXTS[:4] * 20, trainers.UnigramTrainer(
        vocab_size=150, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    raw = target / "raw"
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
                "mask_token": "<mask>", "cls_token": "<s>", "sep_token": "</s>"}
    XLMRobertaTokenizerFast(tokenizer_object=tok, **specials).save_pretrained(raw)
    torch.manual_seed(0)
    # Position table just large enough for MAX_SEQ tokens: a backend that assumed 256 would overflow it.
    XLMRobertaModel(XLMRobertaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=MAX_SEQ + 2,
                                     pad_token_id=1, bos_token_id=0, eos_token_id=2)).save_pretrained(raw)
    transformer = st_models.Transformer(str(raw), max_seq_length=MAX_SEQ)
    pooling = st_models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling]).save(str(target / "model"))
    return target / "model"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("xlmr"))


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One export cache for every variant: they share weights, so the model is exported once."""
    return tmp_path_factory.mktemp("onnx")


def _variant(base: Path, where: Path, pooling: object = None, prompt: str | None = None) -> Path:
    model = where / "model"
    shutil.copytree(base, model)
    if pooling is not None:
        conf = json.loads((model / "1_Pooling" / "config.json").read_text())
        conf.pop("pooling_mode", None)
        conf.update(pooling if isinstance(pooling, dict) else {"pooling_mode": pooling})
        (model / "1_Pooling" / "config.json").write_text(json.dumps(conf))
    if prompt is not None:
        st = json.loads((model / "config_sentence_transformers.json").read_text())
        st.update({"prompts": {"query": prompt, "document": ""}, "default_prompt_name": "query"})
        (model / "config_sentence_transformers.json").write_text(json.dumps(st))
    return model


@pytest.mark.parametrize(("pooling", "prompt"), [
    ("mean", None),
    ("cls", None),
    ("max", None),
    ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, None),  # sentence-transformers < 6
    ("mean", "query: "),  # e5-style default prompt
])
def test_onnx_backend_reproduces_sentence_transformers(tiny_model: Path, onnx_dir: Path, tmp_path: Path,
                                                       pooling: object, prompt: str | None) -> None:
    model = _variant(tiny_model, tmp_path, pooling, prompt)
    torch_emb = load_embedder(str(model), "torch", cache_size=0, threads=1)
    onnx_emb = load_embedder(str(model), "onnx", cache_size=0, threads=1, onnx_dir=onnx_dir)
    assert torch_emb.max_tokens == onnx_emb.max_tokens == MAX_SEQ
    ref, got = torch_emb.embed(TEXTS), onnx_emb.embed(TEXTS)
    assert float(np.min((ref * got).sum(axis=1))) > 0.999


@pytest.mark.parametrize("pooling", ["weightedmean", "lasttoken", ["cls", "mean"]])
def test_onnx_backend_refuses_a_pooling_it_does_not_reproduce(tiny_model: Path, tmp_path: Path,
                                                              pooling: object) -> None:
    model = _variant(tiny_model, tmp_path, pooling)
    with pytest.raises(EmbedderError, match="pooling .* not supported by the ONNX backend.*use backend torch"):
        load_embedder(str(model), "onnx", onnx_dir=tmp_path / "onnx")


def _write(root: Path, files: dict[str, object]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(data))
    return root


def test_config_of_a_sentence_transformers_2_model(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        "config.json": {"model_type": "xlm-roberta", "max_position_embeddings": 514, "pad_token_id": 1},
        "sentence_bert_config.json": {"max_seq_length": 512, "do_lower_case": False},
        "tokenizer_config.json": {"model_max_length": 1000000000000000019884624838656},
        "modules.json": [{"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"},
                         {"idx": 1, "path": "pool", "type": "sentence_transformers.models.Pooling"}],
        "pool/config.json": {"word_embedding_dimension": 384, "pooling_mode_mean_tokens": True},
        "config_sentence_transformers.json": {"prompts": {"query": "query: "}, "default_prompt_name": None},
    })
    conf = read_st_config(root)
    assert (conf.max_tokens, conf.pooling, conf.prompt, conf.pad_id) == (512, "mean", "", 1)


def test_config_limit_falls_back_to_the_tokenizer_then_the_position_table(tmp_path: Path) -> None:
    root = _write(tmp_path, {"config.json": {"model_type": "bert", "max_position_embeddings": 512}})
    assert read_st_config(root).max_tokens == 512
    _write(tmp_path, {"tokenizer_config.json": {"model_max_length": 128}})
    assert read_st_config(root).max_tokens == 128
    _write(tmp_path, {"tokenizer_config.json": {"model_max_length": 4096}})
    assert read_st_config(root).max_tokens == 512  # never past the position table


@pytest.mark.parametrize(("card", "languages"), [
    ("---\nlanguage: en\nlicense: apache-2.0\n---\n# A model\n", frozenset({"en"})),
    ("---\nlanguage:\n- en\n- FR\n---\n", frozenset({"en", "fr"})),
    ("---\nlanguage:\n- multilingual\n- en\n---\n", None),
    ("---\nlicense: mit\n---\n", None),
    ("# No front matter at all\n", None),
    ("---\nlanguage: [unclosed\n---\n", None),
])
def test_the_model_card_says_which_languages_a_model_reads(tmp_path: Path, card: str,
                                                           languages: frozenset[str] | None) -> None:
    (tmp_path / "README.md").write_text(card, encoding="utf-8")
    assert model_languages(tmp_path) == languages


def test_a_model_without_a_card_reads_any_language_and_the_packaged_one_reads_english(tmp_path: Path) -> None:
    assert model_languages(tmp_path) is None
    assert model_languages(resolve_model_path("all-MiniLM-L6-v2")) == frozenset({"en"})


def test_the_settings_can_say_which_languages_the_model_reads_over_its_card() -> None:
    assert load_embedder(backend="onnx-int8", cache_size=0).languages == frozenset({"en"})
    assert load_embedder(backend="onnx-int8", cache_size=0, languages=["EN", "de"]).languages == frozenset({"en", "de"})
    assert load_embedder(backend="onnx-int8", cache_size=0, languages=[]).languages is None
