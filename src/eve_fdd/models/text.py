"""Text side of the backbone: a tokenizer and a CLIP text encoder.

Shapes: a word-level tokenizer (transformers `PreTrainedTokenizerFast` over a `tokenizers`
WordLevel model) whose vocabulary is every word the world writes in captions and
instructions, so nothing is downloaded; full: SD 1.5's CLIP tokenizer. Both go through
`encode_text`, which pads to the tokenizer's max length as SD does.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import numpy as np

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
_WORD = re.compile(r"\w+|[^\w\s]")


@lru_cache(maxsize=1)
def world_words(scenes: int = 300) -> tuple[str, ...]:
    """Every word of the Shapes world's captions and instructions: the vocabulary lists,
    plus captions and edit instructions of `scenes` deterministic scenes (all tasks,
    reserved subjects and styles included), sorted."""
    from ..world import caption, make_edit, random_scene, vocab

    words: set[str] = set()
    for group in (vocab.KINDS, vocab.SUBJECTS, vocab.COLORS, vocab.BACKGROUNDS, vocab.SIZES, vocab.TEXTURES,
                  vocab.STYLES, vocab.RESERVED_STYLES, vocab.LIGHTINGS, vocab.REGIONS, vocab.ALL_TASKS):
        for name in group:
            words.update(_WORD.findall(name))
    for seed in range(scenes):
        scene = random_scene(3_000_000_000 + seed)
        words.update(_WORD.findall(caption(scene)))
        rng = np.random.default_rng(seed)
        for task in vocab.ALL_TASKS:
            try:
                edit = make_edit(scene, task, rng, allow_reserved=True)
            except ValueError:  # e.g. remove from a one-shape scene
                continue
            words.update(_WORD.findall(edit.instruction))
            words.update(_WORD.findall(edit.output_caption))
    return tuple(sorted(words))


def shapes_tokenizer(words: tuple[str, ...] | None = None, max_length: int = 64, eos_last: bool = False):
    """A word-level fast tokenizer over the world's words (lower-cased; unknown words -> <unk>).
    `eos_last`: </s> gets the highest id, as in CLIP's own vocabulary, for models that pool the
    text at the highest id rather than at `eos_token_id` (transformers' XCLIPModel forces that
    legacy CLIP behaviour; with </s> = 3 it would pool at a word in the middle of the caption)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = world_words() if words is None else words
    vocab = {tok: i for i, tok in enumerate([PAD, UNK, BOS, *words, EOS] if eos_last else [PAD, UNK, BOS, EOS, *words])}
    tok = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # \w+ and runs of punctuation, as world_words splits
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, unk_token=UNK, bos_token=BOS, eos_token=EOS, model_max_length=max_length
    )


def backbone_tokenizer(source: str, key: str = "models.backbone.pretrained"):
    """The tokenizer alone (`<source>/tokenizer`) of a backbone in diffusers' pipeline layout,
    as `load_backbone` loads it: a local directory, or a hub id (from the Hugging Face cache,
    else downloaded). Stops with a message naming `key` when it cannot be loaded."""
    from pathlib import Path

    from transformers import AutoTokenizer

    local = Path(source)
    if not source:
        raise ValueError(f"{key}: empty; expected a diffusers pipeline directory or hub id with a tokenizer/")
    if local.exists() and not (local / "tokenizer").is_dir():
        raise FileNotFoundError(f"{key}: {local} has no tokenizer/ (expected a diffusers pipeline layout)")
    try:
        return AutoTokenizer.from_pretrained(str(source), subfolder="tokenizer")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{key}: could not load the tokenizer of {source} ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None


def token_counter(tokenizer: Any):
    """(count_tokens, max_tokens): a text's length in `tokenizer`'s ids, start and end tokens
    included, and the most its text encoder reads (CLIP: 77)."""
    return (lambda text: len(tokenizer(text).input_ids)), int(tokenizer.model_max_length)


def tiny_clip_text_encoder(vocab_size: int, hidden_size: int, layers: int, heads: int, max_positions: int, seed: int = 0):
    """A small `CLIPTextModel` (the class SD 1.5 uses), randomly initialised."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=hidden_size * 4, num_hidden_layers=layers,
        num_attention_heads=heads, max_position_embeddings=max_positions, pad_token_id=0, bos_token_id=2, eos_token_id=3,
        projection_dim=hidden_size,
    )
    return CLIPTextModel(cfg)


def encode_text(tokenizer: Any, text_encoder: Any, prompts: list[str], truncate: bool = False, counts: Any = None):
    """(B, max_length, hidden) text embeddings, padded to the tokenizer's max length as SD does.
    A prompt longer than the encoder reads is cut to it when `truncate` (SD's CLIP: 77 tokens;
    `counts["truncated"]` counts them, `counts["texts"]` every prompt), else a ValueError
    naming it."""
    limit = tokenizer.model_max_length
    ids = tokenizer(prompts, padding="max_length", max_length=limit, truncation=False, return_tensors="pt" if not truncate else None).input_ids
    if truncate:
        cut = sum(len(row) > limit for row in ids)
        ids = tokenizer(prompts, padding="max_length", max_length=limit, truncation=True, return_tensors="pt").input_ids
        if counts is not None:
            counts["texts"] += len(prompts)
            counts["truncated"] += cut
    elif ids.shape[1] > limit:
        lengths = [len(tokenizer(p).input_ids) for p in prompts]
        worst = int(np.argmax(lengths))
        raise ValueError(
            f"prompt {prompts[worst]!r} is {lengths[worst]} tokens, more than the text encoder's {limit}"
        )
    elif counts is not None:
        counts["texts"] += len(prompts)
    device = next(text_encoder.parameters()).device
    # no graph is built through a frozen encoder; one is where learned concept-word rows are
    # attached (models.adapters.ConceptTokens), which are not the encoder's parameters
    return text_encoder(ids.to(device))[0]
