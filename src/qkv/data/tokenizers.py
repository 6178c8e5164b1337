"""Tokenizers: character-level, whitespace word-level, and byte-level BPE (Hugging Face ``tokenizers``).

Every tokenizer reserves the same four special tokens at the same ids, in this order:
``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2, ``<unk>`` = 3. ``encode`` never adds specials itself
(datasets add ``<bos>``/``<eos>`` where they belong); ``decode`` drops them by default.

A tokenizer is saved as one JSON file, ``tokenizer.json`` in a folder by default, written atomically
(temporary file, then ``os.replace``). :func:`load_tokenizer` reads the file and picks the class:
qkv's own tokenizers carry ``"type": "qkv.char"`` / ``"qkv.word"``; anything else is read as a
Hugging Face ``tokenizers`` file. Source/target pairs live in :mod:`qkv.data.tokenizer_pair`.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from qkv.data.files import atomic_open, read_json_object

__all__ = [
    "SPECIAL_TOKENS",
    "PAD_ID",
    "BOS_ID",
    "EOS_ID",
    "UNK_ID",
    "TOKENIZER_FILE",
    "Tokenizer",
    "CharTokenizer",
    "WordTokenizer",
    "BPETokenizer",
    "load_tokenizer",
    "atomic_write_text",
]

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
TOKENIZER_FILE = "tokenizer.json"


@runtime_checkable
class Tokenizer(Protocol):
    """What datasets, training and generation rely on."""

    pad_id: int
    bos_id: int
    eos_id: int
    unk_id: int

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str: ...

    def save(self, folder: str | os.PathLike, *, name: str = TOKENIZER_FILE) -> Path: ...

    def to_json(self) -> str: ...


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    A crash mid-write leaves either the old file or the new one, never a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w") as f:
        f.write(text)
    return path


def _resolve(path: str | os.PathLike, name: str) -> Path:
    """A folder means ``folder/name``; a file path is used as is."""
    path = Path(path)
    return path / name if path.is_dir() else path


class _VocabTokenizer:
    """Shared code of the char and word tokenizers: a fixed list of symbols after the specials."""

    kind = ""
    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID

    def __init__(self, symbols: Sequence[str]) -> None:
        symbols = list(symbols)
        if len(set(symbols)) != len(symbols):
            dupes = sorted(s for s, c in Counter(symbols).items() if c > 1)
            raise ValueError(f"{type(self).__name__}: duplicate symbols {dupes[:10]}")
        clash = [s for s in symbols if s in SPECIAL_TOKENS]
        if clash:
            raise ValueError(f"{type(self).__name__}: symbols {clash} clash with the special tokens")
        self.symbols = symbols
        self._itos = list(SPECIAL_TOKENS) + symbols
        self._stoi = {s: i for i, s in enumerate(self._itos) if i >= len(SPECIAL_TOKENS)}

    @property
    def vocab_size(self) -> int:
        """Number of ids, specials included."""
        return len(self._itos)

    def _split(self, text: str) -> list[str]:
        raise NotImplementedError

    def _join(self, pieces: list[str]) -> str:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; symbols not in the vocabulary map to ``unk_id``. Adds no specials."""
        stoi, unk = self._stoi, self.unk_id
        return [stoi.get(s, unk) for s in self._split(text)]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``encode`` applied to each text."""
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        """Text of ``ids``. Special ids are dropped unless ``skip_special=False``.

        Raises:
            ValueError: an id outside ``[0, vocab_size)``.
        """
        n, pieces = len(self._itos), []
        for i in ids:
            i = int(i)
            if not 0 <= i < n:
                raise ValueError(f"token id {i} is outside the vocabulary [0, {n})")
            if i < len(SPECIAL_TOKENS) and skip_special:
                continue
            pieces.append(self._itos[i])
        return self._join(pieces)

    def id_to_token(self, i: int) -> str:
        """The symbol with id ``i``."""
        return self._itos[i]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description; :meth:`from_dict` inverts it."""
        return {"type": self.kind, "version": 1, "special_tokens": list(SPECIAL_TOKENS), "symbols": self.symbols}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Rebuild from :meth:`to_dict` output, checking the type and the special tokens."""
        if data.get("type") != cls.kind:
            raise ValueError(f"expected a {cls.kind!r} tokenizer, got type {data.get('type')!r}")
        if list(data.get("special_tokens", [])) != list(SPECIAL_TOKENS):
            raise ValueError(f"special tokens {data.get('special_tokens')} != expected {list(SPECIAL_TOKENS)}")
        return cls(data["symbols"])

    def to_json(self) -> str:
        """The text :meth:`save` writes."""
        return json.dumps(self.to_dict(), ensure_ascii=False)

    def save(self, folder: str | os.PathLike, *, name: str = TOKENIZER_FILE) -> Path:
        """Write ``folder/name`` atomically. Returns the path written."""
        return atomic_write_text(Path(folder) / name, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike, *, name: str = TOKENIZER_FILE):
        """Read a tokenizer saved by :meth:`save` (``path`` is the folder or the file)."""
        file = _resolve(path, name)
        return cls.from_dict(_read_json(file))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.symbols == self.symbols

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


class CharTokenizer(_VocabTokenizer):
    """One id per Unicode code point seen in training; any other character maps to ``<unk>``.

    Round-trips every text made only of characters seen in training.
    """

    kind = "qkv.char"

    @classmethod
    def train(cls, texts: Iterable[str]) -> CharTokenizer:
        """Vocabulary = the sorted set of characters in ``texts``."""
        chars: set[str] = set()
        for t in texts:
            chars.update(t)
        return cls(sorted(chars))

    def _split(self, text: str) -> list[str]:
        return list(text)

    def _join(self, pieces: list[str]) -> str:
        return "".join(pieces)


class WordTokenizer(_VocabTokenizer):
    """Whitespace-separated symbols (ListOps, sequence tasks). Decoding joins with single spaces.

    Round-trips text whose tokens are separated by single spaces, with no leading/trailing space.
    """

    kind = "qkv.word"

    @classmethod
    def train(cls, texts: Iterable[str], *, min_count: int = 1) -> WordTokenizer:
        """Vocabulary = words occurring at least ``min_count`` times, most frequent first."""
        counts = Counter(w for t in texts for w in t.split())
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(words)

    def _split(self, text: str) -> list[str]:
        return text.split()

    def _join(self, pieces: list[str]) -> str:
        return " ".join(pieces)


class BPETokenizer:
    """Byte-level BPE trained with Hugging Face ``tokenizers``; round-trips any Unicode text.

    The underlying ``tokenizers.Tokenizer`` is ``self.hf``. Literal ``"<pad>"`` etc. in user text is
    encoded as ordinary text, never as a special token.
    """

    kind = "bpe"
    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID

    def __init__(self, hf_tokenizer: Any) -> None:
        got = [hf_tokenizer.token_to_id(t) for t in SPECIAL_TOKENS]
        if got != [PAD_ID, BOS_ID, EOS_ID, UNK_ID]:
            raise ValueError(f"special tokens {list(SPECIAL_TOKENS)} must have ids [0, 1, 2, 3], got {got}")
        hf_tokenizer.encode_special_tokens = True
        self.hf = hf_tokenizer

    @classmethod
    def train(cls, texts: Iterable[str], *, vocab_size: int = 8000, min_frequency: int = 2) -> BPETokenizer:
        """Learn merges from ``texts`` (an iterable of lines or documents).

        Args:
            texts: training text.
            vocab_size: total ids, specials and the 256 byte symbols included (at least 260).
            min_frequency: merges seen fewer times are not learned.
        """
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        if vocab_size < len(SPECIAL_TOKENS) + 256:
            raise ValueError(f"vocab_size ({vocab_size}) must be >= {len(SPECIAL_TOKENS) + 256} (specials + bytes)")
        hf = HFTokenizer(models.BPE(unk_token="<unk>"))
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train_from_iterator(texts, trainer=trainer)
        return cls(hf)

    @property
    def vocab_size(self) -> int:
        """Number of ids, specials included."""
        return self.hf.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no specials added)."""
        return self.hf.encode(text).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of many texts at once (parallel in Rust)."""
        return [e.ids for e in self.hf.encode_batch(list(texts))]

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        """Text of ``ids``; special ids are dropped unless ``skip_special=False``."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids {bad[:5]} are outside the vocabulary [0, {self.vocab_size})")
        return self.hf.decode(ids, skip_special_tokens=skip_special)

    def id_to_token(self, i: int) -> str:
        """The (byte-level) token string with id ``i``."""
        return self.hf.id_to_token(i)

    def to_json(self) -> str:
        """The Hugging Face JSON text :meth:`save` writes."""
        return self.hf.to_str()

    def save(self, folder: str | os.PathLike, *, name: str = TOKENIZER_FILE) -> Path:
        """Write the Hugging Face JSON to ``folder/name`` atomically. Returns the path."""
        return atomic_write_text(Path(folder) / name, self.to_json())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BPETokenizer:
        """Rebuild from a parsed Hugging Face ``tokenizer.json``."""
        from tokenizers import Tokenizer as HFTokenizer

        return cls(HFTokenizer.from_str(json.dumps(data)))

    @classmethod
    def load(cls, path: str | os.PathLike, *, name: str = TOKENIZER_FILE) -> BPETokenizer:
        """Read a tokenizer saved by :meth:`save` (``path`` is the folder or the file)."""
        return cls.from_dict(_read_json(_resolve(path, name)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BPETokenizer) and other.hf.to_str() == self.hf.to_str()

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"


def _read_json(file: Path) -> dict[str, Any]:
    if not file.is_file():
        raise FileNotFoundError(f"no tokenizer file at {file}")
    return read_json_object(file, "tokenizer file")


_KINDS = {CharTokenizer.kind: CharTokenizer, WordTokenizer.kind: WordTokenizer}


def load_tokenizer(path: str | os.PathLike, *, name: str = TOKENIZER_FILE) -> Tokenizer:
    """Load any qkv tokenizer, picking the class from the file.

    Args:
        path: a folder holding ``name`` (default ``tokenizer.json``) or the file itself.
        name: file name inside a folder.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a tokenizer qkv knows.
    """
    file = _resolve(path, name)
    data = _read_json(file)
    kind = data.get("type")
    try:
        if kind in _KINDS:
            return _KINDS[kind].from_dict(data)
        if isinstance(data.get("model"), dict):
            return BPETokenizer.from_dict(data)
    except Exception as e:  # tokenizers raises its own exception type
        raise ValueError(f"{file}: cannot load tokenizer: {e}") from e
    raise ValueError(f"{file}: unknown tokenizer (type {kind!r}; expected one of {sorted(_KINDS)} or a HF file)")
