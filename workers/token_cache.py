"""Tokenize each training text once per study, not once per batch of every trial.

The stock `SentenceTransformerDataCollator` calls `model.preprocess` on every batch, so a study of N trials
tokenizes its training set N times (times the epochs). `TokenCache` lives in the `PreparedStudy` and keeps, per
text and per maximum length (trials may sample `max_seq_length`), the unpadded rows that `model.preprocess`
itself produced; the trainer's own collator then gets a `preprocess_fn` that looks rows up, tokenizes only the
texts it has not seen (with the model's own `preprocess`, so the ids are the library's), and pads them the way
the tokenizer pads. The first batches of each maximum length are checked against the stock path, once per
study (every trial loads the same base model and tokenizer), and any difference turns the cache off for the
study; prompts, tasks (routers) and anything that is not a plain string always take the stock
path. Row independence is what makes this exact: with `padding=True` a text's ids, type ids and mask do not
depend on the other texts of its batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

MAX_CACHED_TEXTS = 250_000  # per study, all lengths together (~60-100 MB for sentence-length texts)
CHECKED_CALLS = 2  # per study and maximum length: the first batches are compared with the stock path
MASK = "attention_mask"

Preprocess = Callable[..., dict[str, Any]]
Row = torch.Tensor  # int32, one line per key of `TokenCache.keys`, unpadded


class TokenCache:
    """Unpadded token rows by (maximum length, text), shared by the trials of one study in one worker."""

    def __init__(self, max_texts: int = MAX_CACHED_TEXTS) -> None:
        self.max_texts = max_texts
        self.rows: dict[tuple[int | None, str], Row] = {}
        self.keys: tuple[str, ...] | None = None  # the tensor keys preprocess returns, in its order
        self.extras: dict[str, Any] | None = None  # its non-tensor values (e.g. modality "text")
        self.disabled: str | None = None  # why the stock path is used for good, once known
        self.hits = 0
        self.misses = 0
        self._checks_left: dict[int | None, int] = {}  # by maximum length

    def check_due(self, max_len: int | None) -> bool:
        """Whether the next cached batch of this maximum length is compared with the stock path (the first
        CHECKED_CALLS of the study are)."""
        left = self._checks_left.get(max_len, CHECKED_CALLS)
        if left <= 0:
            return False
        self._checks_left[max_len] = left - 1
        return True

    def preprocess_fn(self, model: SentenceTransformer, stock: Preprocess) -> Preprocess:
        """A drop-in for `stock` (the collator's `model.preprocess`) that reads from the cache."""
        return _CachedPreprocess(self, model, stock)

    # -------------------------------------------------------------- rows

    def lookup(self, model: SentenceTransformer, stock: Preprocess, texts: Sequence[str]) -> dict[str, Any] | None:
        """The padded batch for `texts`, or None when this model's output cannot be cached (then disabled)."""
        tokenizer = _tokenizer(model)
        if tokenizer is None:
            self.disable("the model's first module has no tokenizer")
            return None
        max_len = model.max_seq_length
        missing = [t for t in dict.fromkeys(texts) if (max_len, t) not in self.rows]
        fresh: dict[str, Row] = {}
        if missing:
            rows = self._tokenize(stock, missing, tokenizer.padding_side)
            if rows is None:
                return None
            fresh = dict(zip(missing, rows))
            room = self.max_texts - len(self.rows)
            for text in missing[:max(room, 0)]:
                self.rows[(max_len, text)] = fresh[text]
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        batch = [fresh[t] if t in fresh else self.rows[(max_len, t)] for t in texts]
        return self._pad(batch, tokenizer)

    def _tokenize(self, stock: Preprocess, texts: list[str], side: str) -> list[Row] | None:
        out = stock(texts)
        tensors = {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}
        extras = {k: v for k, v in out.items() if not isinstance(v, torch.Tensor)}
        mask = tensors.get(MASK)
        shape = mask.shape if mask is not None else None
        if shape is None or len(shape) != 2 or shape[0] != len(texts):
            self.disable(f"preprocess returned {sorted(out)} without a per-row {MASK}")
            return None
        if any(v.shape != shape for v in tensors.values()) or set(tensors) - set(_PAD_SOURCES):
            self.disable(f"preprocess returned {sorted(out)}; only {sorted(_PAD_SOURCES)} are padded here")
            return None
        keys = tuple(tensors)
        if self.keys is None:
            self.keys, self.extras = keys, extras
        elif keys != self.keys or extras != self.extras:
            self.disable("preprocess returned different keys for different batches")
            return None
        stacked = torch.stack([tensors[k] for k in keys]).to(torch.int32)  # (keys, texts, width)
        lengths = mask.sum(dim=1).tolist()
        width = shape[1]
        if side == "left":
            return [stacked[:, i, width - n:].clone() for i, n in enumerate(lengths)]
        return [stacked[:, i, :n].clone() for i, n in enumerate(lengths)]

    def _pad(self, batch: list[Row], tokenizer: Any) -> dict[str, Any]:
        assert self.keys is not None and self.extras is not None
        width = max(r.shape[1] for r in batch)
        out = torch.empty((len(self.keys), len(batch), width), dtype=torch.int64)
        for j, key in enumerate(self.keys):
            out[j].fill_(_PAD_SOURCES[key](tokenizer))
        left = tokenizer.padding_side == "left"
        for i, row in enumerate(batch):
            n = row.shape[1]
            if left:
                out[:, i, width - n:] = row
            else:
                out[:, i, :n] = row
        result: dict[str, Any] = {key: out[j] for j, key in enumerate(self.keys)}
        result.update(self.extras)
        return result

    def disable(self, why: str) -> None:
        if self.disabled is None:
            log.info("token cache off for this study (%s): every batch is tokenized as usual", why)
        self.disabled = why
        self.rows.clear()


class _CachedPreprocess:
    """The collator's `preprocess_fn` for one trial's model."""

    def __init__(self, cache: TokenCache, model: SentenceTransformer, stock: Preprocess) -> None:
        self.cache = cache
        self.model = model
        self.stock = stock

    def __call__(self, inputs: Sequence[Any], prompt: str | None = None, **kwargs: Any) -> dict[str, Any]:
        plain = (not prompt and self.cache.disabled is None and inputs
                 and all(v is None for v in kwargs.values()) and all(isinstance(x, str) for x in inputs))
        if not plain:
            return self.stock(inputs, prompt=prompt, **kwargs)
        cached = self.cache.lookup(self.model, self.stock, list(inputs))
        if cached is None:
            return self.stock(inputs, prompt=prompt, **kwargs)
        if self.cache.check_due(self.model.max_seq_length):
            expected = self.stock(inputs, prompt=prompt, **kwargs)
            if not same_batch(cached, expected):
                log.warning("token cache: a cached batch differs from the tokenizer's")
                self.cache.disable("a cached batch differed from the tokenizer's")
                return expected
        return cached


def same_batch(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two preprocess outputs are identical (tensors equal in value, dtype and shape)."""
    if a.keys() != b.keys():
        return False
    for key, x in a.items():
        y = b[key]
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.dtype == y.dtype
                    and x.shape == y.shape and torch.equal(x, y)):
                return False
        elif x != y:
            return False
    return True


def _tokenizer(model: SentenceTransformer) -> Any:
    first = model[0] if len(model) else None
    return getattr(first, "tokenizer", None)


_PAD_SOURCES: dict[str, Callable[[Any], int]] = {
    "input_ids": lambda tok: int(tok.pad_token_id if tok.pad_token_id is not None else 0),
    "token_type_ids": lambda tok: int(getattr(tok, "pad_token_type_id", 0) or 0),
    MASK: lambda tok: 0,
}

__all__ = ["TokenCache", "same_batch"]
