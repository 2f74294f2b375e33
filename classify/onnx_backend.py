"""ONNX Runtime backends (fp32 and int8), exported locally from the same model — never fetched from a hub.

The export runs once per model revision and is cached outside the repository (``~/.cache/wirewatch/onnx``
unless configured); the int8 variant is quantized dynamically with **per-channel** weight scales, because
per-tensor scales move cosines enough (0.93–0.96 to fp32) to flip clear-cut topic decisions.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classify.embedder import EmbedderError, Vectors, model_revision, normalize
from wirewatch.log import get_logger

log = get_logger("classify.onnx")

DEFAULT_CACHE = Path("~/.cache/wirewatch/onnx")
# Padded tokens per model call; see OnnxEmbedder._chunks. None = a fixed number of texts per call.
TOKEN_BUDGET: int | None = 512
# Tokens embedded per text. A feed item (title + summary) is 40-100 tokens; title + summary + the 600-character
# content lead the classifier embeds for a full-text entry is ~140 (up to ~170). Cutting at 128 cost BBC
# macro-F1 0.004 on full articles and nothing on feed items for ~1.2x on full articles (96: -0.013, too much);
# ``bench.classify --levers`` measures both. None = the model's own limit.
TOKEN_CAP: int | None = 128
# Model calls run at once, each on its own thread with ``threads / calls`` intra-op threads (see OnnxEmbedder).
# Measured on 2 cores (``bench.classify --levers``): two single-threaded calls side by side do 1.1-1.4x the work
# per second of one call on two intra-op threads, with the same vectors: the int8 kernels of one small call do
# not split well across threads. More than a few calls at once rarely have chunks to work on.
PARALLEL_CALLS_MAX = 4
GRAPH_LEVELS = {
    "basic": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def _export_fp32(model_path: Path, target: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(model_path), local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
    sample = tok(["an example sentence", "another, somewhat longer example sentence"], padding=True,
                 return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class Wrapped(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> Any:
            return self.inner(**dict(zip(names, args, strict=True))).last_hidden_state

    axes = {n: {0: "batch", 1: "seq"} for n in [*names, "last_hidden_state"]}
    with torch.no_grad():
        torch.onnx.export(Wrapped(model), tuple(sample[n] for n in names), str(target), input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False)


def export(model_path: Path, *, int8: bool, cache_dir: Path | None = None) -> Path:
    """The cached ONNX file for ``model_path`` (fp32, or int8 per-channel), exporting it on first use.

    Raises:
        EmbedderError: when the export or quantization fails.
    """
    root = (cache_dir or DEFAULT_CACHE).expanduser() / model_revision(model_path)
    root.mkdir(parents=True, exist_ok=True)
    fp32 = root / "model.onnx"
    q8 = root / "model.int8-per-channel.onnx"
    wanted = q8 if int8 else fp32
    if wanted.is_file():
        return wanted
    try:
        if not fp32.is_file():
            # Export beside the target and rename: concurrent workers never read a half-written file.
            with tempfile.TemporaryDirectory(dir=root) as tmp:
                _export_fp32(model_path, Path(tmp) / "model.onnx")
                os.replace(Path(tmp) / "model.onnx", fp32)
            log.info("onnx_exported", model=str(model_path), path=str(fp32))
        if int8 and not q8.is_file():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            with tempfile.TemporaryDirectory(dir=root) as tmp:
                quantize_dynamic(str(fp32), str(Path(tmp) / q8.name), per_channel=True, weight_type=QuantType.QInt8)
                os.replace(Path(tmp) / q8.name, q8)
            log.info("onnx_quantized", model=str(model_path), path=str(q8), per_channel=True)
    except EmbedderError:
        raise
    except Exception as exc:  # noqa: BLE001 - any exporter failure means this backend is unavailable
        raise EmbedderError(f"cannot export {model_path} to ONNX ({'int8' if int8 else 'fp32'}): {exc}") from exc
    return wanted


class OnnxEmbedder:
    """An :class:`classify.embedder.Embedder` on ONNX Runtime with the model's own tokenizer and pooling.

    A batch's texts are sorted by length and cut into model calls (:meth:`_chunks`); ``parallel_calls`` of
    them run at once, each on ``threads / parallel_calls`` intra-op threads (:func:`plan_threads`). A call's
    vectors do not depend on which thread runs it, so the result is the same as one call after another.
    """

    def __init__(self, onnx_file: Path, model_path: Path, *, name: str, backend: str, threads: int | None = None,
                 batch_size: int = 32, token_budget: int | None = TOKEN_BUDGET, token_cap: int | None = TOKEN_CAP,
                 sort_by_length: bool = True, graph_level: str = "all", parallel_calls: int | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        conf = read_st_config(model_path)
        self.max_tokens = min(conf.max_tokens, token_cap) if token_cap else conf.max_tokens
        self._pooling = conf.pooling
        self._prompt = conf.prompt
        self._pad_id = conf.pad_id
        tok_file = model_path / "tokenizer.json"
        if not tok_file.is_file():
            raise EmbedderError(f"{model_path} has no tokenizer.json; the ONNX backend needs a fast tokenizer")
        self._tok = Tokenizer.from_file(str(tok_file))
        self._tok.enable_truncation(max_length=self.max_tokens)
        self._tok.no_padding()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = GRAPH_LEVELS[graph_level](ort)
        self.calls, intra = plan_threads(threads, parallel_calls)
        if intra:
            opts.intra_op_num_threads = intra
        opts.inter_op_num_threads = 1
        # Spinning threads would keep the cores busy after each call, starving the scoring that follows.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]
        self.name = name
        self.revision = model_revision(model_path)
        self.backend = backend
        self.dim = int(_json(model_path / "config.json").get("hidden_size", 0)) or self._probe_dim()
        self._batch = batch_size
        self._budget = token_budget
        self._sort = sort_by_length
        # Concurrent InferenceSession.run calls are safe; ONNX Runtime releases the GIL while a call computes.
        self._lanes = ThreadPoolExecutor(self.calls, thread_name_prefix="onnx-call") if self.calls > 1 else None

    @classmethod
    def from_model(cls, model_path: Path, *, name: str, int8: bool, cache_dir: Path | None = None,
                   threads: int | None = None, batch_size: int = 32, **options: Any) -> OnnxEmbedder:
        """Export (or reuse the cached export of) ``model_path`` and open it.

        ``options`` are the constructor's tuning keywords (``token_budget``, ``token_cap``...).

        Raises:
            EmbedderError: when the model has modules this backend does not reproduce (a Dense head, say).
        """
        modules_file = model_path / "modules.json"
        modules = json.loads(modules_file.read_text()) if modules_file.is_file() else []
        supported = ("Transformer", "Pooling", "Normalize")
        odd = [m.get("type", "?") for m in modules if not str(m.get("type", "")).endswith(supported)]
        if odd:
            raise EmbedderError(f"{model_path}: modules {odd} are not supported by the ONNX backend; use backend torch")
        read_st_config(model_path)  # an unsupported pooling fails here, before an export
        onnx_file = export(model_path, int8=int8, cache_dir=cache_dir)
        return cls(onnx_file, model_path, name=name, backend="onnx-int8" if int8 else "onnx",
                   threads=threads, batch_size=batch_size, **options)

    def _probe_dim(self) -> int:
        return int(self._run([self._tok.encode("probe")]).shape[1])

    def _run(self, encodings: Sequence[Any]) -> Vectors:
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self._pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            n = len(e.ids)
            ids[row, :n], mask[row, :n], types[row, :n] = e.ids, e.attention_mask, e.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        hidden = self._session.run(None, {k: feeds[k] for k in self._inputs})[0]
        if self._pooling == "cls":
            return normalize(hidden[:, 0])
        m = mask[:, :, None].astype(np.float32)
        if self._pooling == "max":
            return normalize(np.where(m > 0, hidden, -np.inf).max(axis=1))
        pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        return normalize(pooled)

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts``; see :class:`classify.embedder.Embedder`."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tok.encode_batch([self._prompt + t for t in texts] if self._prompt else list(texts))
        # Similar lengths share a batch, so little compute goes to padding; the rows go back in input order.
        order = list(range(len(texts)))
        if self._sort:
            order.sort(key=lambda i: len(encodings[i].ids))
        chunks = self._chunks(order, [len(e.ids) for e in encodings])

        def run(chunk: list[int]) -> None:
            out[chunk] = self._run([encodings[i] for i in chunk])  # disjoint rows: no two calls write one

        apply = self._lanes.map if self._lanes is not None and len(chunks) > 1 else map
        for _ in apply(run, chunks):  # re-raises a failed call's error
            pass
        return out

    def _chunks(self, order: list[int], lengths: list[int]) -> list[list[int]]:
        """``order`` cut into model calls of at most ``batch`` texts and, with a budget, ``budget`` padded tokens.

        Measured (``bench.classify --levers``): per CPU-second, model calls of ~512 padded tokens beat larger
        ones on int8 even without padding, so the budget, not the batch size, sets how many long texts go together.
        """
        chunks: list[list[int]] = []
        cur: list[int] = []
        width = 0
        for i in order:
            w = max(width, lengths[i])
            if cur and (len(cur) >= self._batch or (self._budget is not None and w * (len(cur) + 1) > self._budget)):
                chunks.append(cur)
                cur, w = [], lengths[i]
            cur.append(i)
            width = w
        if cur:
            chunks.append(cur)
        return chunks


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity; the machine's count where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def plan_threads(threads: int | None, calls: int | None) -> tuple[int, int | None]:
    """How many model calls run at once and the intra-op threads of each (None: ONNX Runtime's default).

    ``threads`` is the cores the embedder may use (None: all available), ``calls`` the model calls at once
    (None: as many as ``threads``, at most :data:`PARALLEL_CALLS_MAX`). ``calls=1`` is one call at a time on
    every thread, as before parallel calls (unset ``threads`` then leaves the count to ONNX Runtime).
    """
    if calls == 1:
        return 1, threads
    total = threads or available_cores()
    n = max(1, min(total, calls or PARALLEL_CALLS_MAX))
    return n, max(1, total // n)


@dataclass(frozen=True)
class StConfig:
    """What the ONNX backend must reproduce of a sentence-transformers model, read from its own files."""

    max_tokens: int
    pooling: str
    prompt: str
    pad_id: int


_LEGACY_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
                   "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                   "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
_POOLINGS = ("cls", "mean", "max")
# transformers' "no limit" model_max_length is 1e30; anything this large is not a model's limit.
_NO_LIMIT = 1_000_000


def read_st_config(model_path: Path) -> StConfig:
    """Token limit, pooling, default prompt and pad id, as sentence-transformers itself would read them.

    The limit is ``sentence_bert_config.json``'s ``max_seq_length`` (sentence-transformers < 6), else the
    tokenizer's ``model_max_length`` (>= 6), capped by the model's position table; the pooling comes from the
    Pooling module that ``modules.json`` names (old ``pooling_mode_*`` flags or the newer ``pooling_mode``).

    Raises:
        EmbedderError: for a pooling this backend does not reproduce.
    """
    modules_file = model_path / "modules.json"
    modules = json.loads(modules_file.read_text()) if modules_file.is_file() else []
    pool_dir = next((str(m.get("path", "")) for m in modules if str(m.get("type", "")).endswith("Pooling")),
                    "1_Pooling")
    pool_conf = _json(model_path / pool_dir / "config.json")
    mode: Any = pool_conf.get("pooling_mode") or [v for k, v in _LEGACY_POOLING.items() if pool_conf.get(k)] or "mean"
    if isinstance(mode, list) and len(mode) == 1:
        mode = mode[0]
    if mode not in _POOLINGS:
        raise EmbedderError(f"{model_path}: pooling {mode!r} is not supported by the ONNX backend "
                            f"(it reproduces {', '.join(_POOLINGS)}); use backend torch")
    config = _json(model_path / "config.json")
    limit = _json(model_path / "sentence_bert_config.json").get("max_seq_length")
    if not isinstance(limit, int):
        limit = _json(model_path / "tokenizer_config.json").get("model_max_length")
    positions = int(config.get("max_position_embeddings") or 512)
    if "roberta" in str(config.get("model_type", "")):
        positions -= int(config.get("pad_token_id") or 1) + 1  # RoBERTa-family position ids start after the pad id
    max_tokens = min(int(limit), positions) if isinstance(limit, int | float) and 0 < limit < _NO_LIMIT else positions
    st = _json(model_path / "config_sentence_transformers.json")
    prompts = st.get("prompts")
    name = st.get("default_prompt_name")
    prompt = str(prompts.get(name) or "") if isinstance(prompts, dict) and name else ""
    if prompt and pool_conf.get("include_prompt") is False:
        raise EmbedderError(f"{model_path}: pooling without the prompt's tokens is not supported by the ONNX backend; "
                            "use backend torch")
    pad_id = int(config.get("pad_token_id") or 0)
    return StConfig(max_tokens=max_tokens, pooling=str(mode), prompt=prompt, pad_id=pad_id)


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {}
