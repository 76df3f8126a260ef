"""The Shapes profile's own small Llama: train it on CPU, write it as GGUF, load it like Llama-2.

At full scale the instructions come from a real Llama-2-7B-chat GGUF run by llama-cpp-python.
The Shapes profile cannot ship one, so it trains a tiny `transformers.LlamaForCausalLM` on
(chat messages, answer) pairs and exports it as a GGUF with the same architecture ("llama"),
a SentencePiece-style ("llama") vocabulary and a Llama-2 chat template, so that
`load_llama(...)` and `create_chat_completion(...)` are the same code path for both models.

Three things must agree for the small model to answer at inference what it learned:
- the prompt text: training renders each conversation with llama-cpp-python's own
  `Jinja2ChatFormatter` over the template stored in the GGUF;
- the token ids: training tokenises that text with llama.cpp's tokenizer (a vocab-only load
  of the GGUF), exactly as `create_chat_completion` does (`special=True`, no extra BOS);
- the weights: float32 tensors under llama.cpp's names, with Q and K rows permuted from the
  Hugging Face rotary layout to llama.cpp's (`permute_qk`).

The vocabulary is word level: every word of the corpus (and every prefix of it, with and
without the SentencePiece space marker) is one piece, scored by length, so llama.cpp's SPM
merges always end in one token per word. The template puts the answer right after
`[/INST]` with no space, because a JSON grammar at generation time forbids a leading space.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

SPACE = "\u2581"  # SentencePiece's marker for a space ("▁")
UNK, BOS, EOS = "<unk>", "<s>", "</s>"
GGUF_MAGIC = b"GGUF"
IGNORE = -100

# Llama-2 chat format, except that an assistant turn is `{content}</s>` with no leading
# space: the generation prompt ends with `[/INST]` and the answer (JSON) follows directly.
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}"
    "{% set loop_messages = messages %}{% set system_message = '' %}"
    "{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' and loop.index0 == 0 and system_message %}"
    "{{ bos_token + '[INST] <<SYS>>\\n' + system_message.strip() + '\\n<</SYS>>\\n\\n' + message['content'].strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + message['content'].strip() + ' [/INST]' }}"
    "{% else %}"
    "{{ message['content'].strip() + eos_token }}"
    "{% endif %}"
    "{% endfor %}"
)

Messages = list[dict[str, str]]


class ModelFileError(FileNotFoundError, ValueError):
    """A GGUF model file is missing or is not a loadable GGUF model."""


class TinyLlamaConfig(BaseModel):
    """The small Llama and its training run (Shapes profile)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden_size: int = Field(128, ge=8, description="embedding width")
    layers: int = Field(4, ge=1, description="transformer blocks")
    heads: int = Field(4, ge=1, description="attention heads (no grouped-query attention)")
    intermediate_size: int = Field(352, ge=8, description="SwiGLU feed-forward width")
    max_positions: int = Field(512, ge=16, description="context length; every conversation must fit")
    steps: int = Field(600, ge=0, description="optimizer steps")
    batch_size: int = Field(16, ge=1, description="conversations per step")
    prompt_groups: int = Field(
        2, ge=1, description="distinct shared prompt prefixes (system + few-shot turns) per step; each runs once per step"
    )
    lr: float = Field(3e-3, gt=0, description="peak AdamW learning rate (warmup, then cosine to lr/10)")
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    swap_examples: float = Field(
        0.75, ge=0, le=1,
        description="share of conversations whose few-shot turns are replaced, for training, by other conversations' "
        "final turns with the same prompt (same system and few-shot turns): fixed few-shot answers teach nothing "
        "after the first steps, varied ones are three worked answers per sequence instead of one",
    )
    loss_on_examples: bool = Field(
        True, description="also learn the few-shot assistant turns inside the prompt, not only the final answer"
    )
    bf16: bool | None = Field(
        None, description="bfloat16 autocast in training (weights stay float32); None = when the CPU has native bf16 (AVX512-BF16 or AMX)"
    )
    seed: int = 0
    threads: int = Field(0, ge=0, description="torch CPU threads; 0 = all cores")

    @model_validator(mode="after")
    def _heads_divide(self) -> "TinyLlamaConfig":
        head_dim, rest = divmod(self.hidden_size, self.heads)
        if rest or head_dim % 2:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be heads ({self.heads}) x an even head size")
        return self


# ---------------------------------------------------------------------------- vocabulary

TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_BYTE = 1, 2, 3, 6  # gguf.TokenType values


@dataclass(frozen=True)
class Vocab:
    """A SentencePiece-style ("llama") vocabulary: pieces, merge scores and token types."""

    tokens: tuple[str, ...]
    scores: tuple[float, ...]
    types: tuple[int, ...]
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __len__(self) -> int:
        return len(self.tokens)


_WORD = re.compile(r"\w+|[^\w\s]")


def corpus_words(texts: Iterable[str]) -> set[str]:
    """The words of a corpus: runs of letters/digits, and each punctuation mark on its own."""
    words: set[str] = set()
    for text in texts:
        words.update(_WORD.findall(text))
    return words


def build_vocab(texts: Iterable[str]) -> Vocab:
    """Control tokens, the 256 byte-fallback tokens, every character of the corpus and every
    prefix of every word (with and without the `▁` space marker).

    Scores grow with piece length, so llama.cpp's SPM tokenizer (which merges the adjacent
    pair with the best-scoring result first) turns each corpus word into one token: the
    leftmost piece of a word is always a prefix, and a prefix followed by its neighbour is a
    longer prefix, so some merge is always possible until the word is whole.
    """
    texts = list(texts)
    chars = {c for t in texts for c in t if not c.isspace() or c == "\n" or c == "\t"}
    chars.add(SPACE)
    pieces: set[str] = set(chars)
    for word in corpus_words(texts):
        for end in range(1, len(word) + 1):
            pieces.add(word[:end])
            pieces.add(SPACE + word[:end])
    specials = {UNK, BOS, EOS}
    pieces -= specials
    byte_pieces = [f"<0x{b:02X}>" for b in range(256)]
    pieces -= set(byte_pieces)
    ordered = sorted(pieces, key=lambda p: (len(p), p))
    tokens = [UNK, BOS, EOS, *byte_pieces, *ordered]
    scores = [0.0] * (3 + 256) + [float(len(p)) for p in ordered]
    types = [TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL] + [TOKEN_BYTE] * 256 + [TOKEN_NORMAL] * len(ordered)
    return Vocab(tuple(tokens), tuple(scores), tuple(types))


def template_text(chat_template: str = LLAMA2_CHAT_TEMPLATE) -> str:
    """The template's literal text (`[INST]`, `<<SYS>>`, ...), rendered around placeholders,
    so the vocabulary covers what the template adds to every prompt."""
    messages = [
        {"role": "system", "content": "x"},
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "x"},
        {"role": "user", "content": "x"},
    ]
    return render_prompt(messages, chat_template)


def render_prompt(messages: Messages, chat_template: str = LLAMA2_CHAT_TEMPLATE, bos_token: str = BOS, eos_token: str = EOS) -> str:
    """The prompt text exactly as `Llama.create_chat_completion` renders it for a GGUF whose
    metadata holds `chat_template` (llama-cpp-python's own Jinja2 formatter)."""
    return _formatter(chat_template, bos_token, eos_token)(messages=messages).prompt


@functools.lru_cache(maxsize=8)
def _formatter(chat_template: str, bos_token: str, eos_token: str):
    # compiling the template takes ~3 ms: once per template, not once per conversation
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    return Jinja2ChatFormatter(template=chat_template, eos_token=eos_token, bos_token=bos_token)


# ---------------------------------------------------------------------------- GGUF export


def permute_qk(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Hugging Face's rotary layout (halves) -> llama.cpp's (interleaved pairs), per head,
    as `convert_hf_to_gguf.py` does for Q (n_head) and K (n_head_kv)."""
    rows = weight.shape[0]
    return weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def export_gguf(model: Any, vocab: Vocab, chat_template: str, path: str | Path) -> Path:
    """Write a `transformers.LlamaForCausalLM` as a float32 GGUF (architecture "llama") with
    the vocabulary and chat template; atomic (a temporary file, then `os.replace`)."""
    import gguf
    import torch

    cfg = model.config
    if cfg.vocab_size != len(vocab):
        raise ValueError(f"model vocab_size {cfg.vocab_size} != vocabulary size {len(vocab)}")
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    rope = getattr(cfg, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"only plain rotary embeddings export to llama.cpp, got rope_type {rope.get('rope_type')!r}")
    rope_theta = float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    w = gguf.GGUFWriter(tmp, arch="llama")
    w.add_name("eve-fdd tiny llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(rope_theta)
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_vocab_size(len(vocab))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)

    w.add_tokenizer_model("llama")
    w.add_token_list(list(vocab.tokens))
    w.add_token_scores(list(vocab.scores))
    w.add_token_types(list(vocab.types))
    w.add_unk_token_id(vocab.unk_id)
    w.add_bos_token_id(vocab.bos_id)
    w.add_eos_token_id(vocab.eos_id)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)
    w.add_chat_template(chat_template)

    sd = {k: v.detach().to(torch.float32).cpu().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", sd[p + "input_layernorm.weight"])
        w.add_tensor(b + "attn_q.weight", permute_qk(sd[p + "self_attn.q_proj.weight"], n_head))
        w.add_tensor(b + "attn_k.weight", permute_qk(sd[p + "self_attn.k_proj.weight"], n_kv))
        w.add_tensor(b + "attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        w.add_tensor(b + "attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        w.add_tensor(b + "ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        w.add_tensor(b + "ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        w.add_tensor(b + "ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        w.add_tensor(b + "ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    # lm_head.weight is in the state dict even when tied; writing it keeps tied models right
    w.add_tensor("output.weight", sd["lm_head.weight"])
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    finally:
        w.close()
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------- loading


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_llama(
    path: str | Path,
    n_ctx: int = 2048,
    n_threads: int | None = None,
    n_gpu_layers: int = 0,
    seed: int = 0,
    verbose: bool = False,
    **kwargs: Any,
):
    """Load a GGUF model with llama-cpp-python (the tiny Shapes model and a real Llama-2 chat
    GGUF alike). Extra keyword arguments go to `llama_cpp.Llama` (`logits_all`, `vocab_only`).

    Raises ModelFileError naming the path when the file is missing or not a loadable GGUF.
    """
    import llama_cpp

    path = Path(path)
    if not path.is_file():
        what = "a directory" if path.is_dir() else "missing"
        raise ModelFileError(f"{path}: expected a GGUF model file, but the path is {what}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelFileError(f"{path}: not a GGUF model file (starts with {magic!r}, expected {GGUF_MAGIC!r})")
    try:
        return llama_cpp.Llama(
            model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, n_gpu_layers=n_gpu_layers,
            seed=seed, verbose=verbose, **kwargs,
        )
    except ValueError as exc:
        raise ModelFileError(
            f"{path}: llama.cpp could not load this GGUF model (truncated, corrupt or an unsupported "
            f"architecture?): {exc}"
        ) from None


# ---------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Encoded:
    """One conversation as token ids, and where its parts are."""

    ids: list[int]  # prompt tokens, then answer tokens and </s>
    n_prompt: int  # answer tokens start here
    spans: tuple[tuple[int, int], ...] = ()  # [start, end) of the few-shot assistant turns (with </s>) in the prompt
    n_shared: int = 0  # tokens before the final user turn (system + few-shot turns), often shared by many conversations

    def targets(self, examples: bool) -> list[int]:
        """Next-token targets (target t is token t+1): the answer and </s>, and with
        `examples` the few-shot assistant turns; IGNORE elsewhere."""
        y = [IGNORE] * (len(self.ids) - 1)
        y[self.n_prompt - 1 :] = self.ids[self.n_prompt :]
        if examples:
            for start, end in self.spans:
                y[start - 1 : end - 1] = self.ids[start:end]
        return y

    def first_target(self, examples: bool) -> int:
        """Position of the first target `targets(examples)` sets (spans come before the answer)."""
        return (self.spans[0][0] if examples and self.spans else self.n_prompt) - 1


def encode_pairs(llm: Any, pairs: Sequence[tuple[Messages, str]], chat_template: str) -> list[Encoded]:
    """Token ids as llama-cpp-python will feed them at generation: the rendered prompt
    tokenised with `special=True` and no added BOS (the template writes `<s>` itself), then
    the answer's tokens and `</s>`."""
    bos = llm._model.token_get_text(llm.token_bos())
    eos = llm._model.token_get_text(llm.token_eos())
    bos_id, eos_id = llm.token_bos(), llm.token_eos()
    out = []
    for messages, answer in pairs:
        prompt = render_prompt(messages, chat_template, bos_token=bos, eos_token=eos)
        p = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        a = llm.tokenize(answer.strip().encode("utf-8"), add_bos=False, special=False)
        # every turn starts with <s>, so the prefix before the last one is the same token for
        # token in every conversation with the same system prompt and few-shot turns
        n_shared = max(i for i, t in enumerate(p) if t == bos_id) if bos_id in p else 0
        out.append(Encoded(p + a + [eos_id], len(p), _assistant_spans(llm, messages, p, eos_id), n_shared))
    return out


def _assistant_spans(llm: Any, messages: Messages, ids: list[int], eos_id: int) -> tuple[tuple[int, int], ...]:
    """Where each few-shot assistant turn (its content and </s>) lies in the prompt's ids:
    the template writes each one as `{content}</s>`, so it is the tokens of its content
    right before an </s>; checked against llama.cpp's tokenisation of the content alone."""
    contents = [m["content"].strip() for m in messages if m["role"] == "assistant"]
    ends = [i for i, t in enumerate(ids) if t == eos_id]
    if len(ends) != len(contents):
        return ()
    spans = []
    for end, content in zip(ends, contents):
        c = llm.tokenize(content.encode("utf-8"), add_bos=False, special=False)
        start = end - len(c)
        if start < 0 or ids[start:end] != c:
            return ()  # tokenised differently in context: learn the final answer only
        spans.append((start, end + 1))
    return tuple(spans)


def swap_examples(pairs: Sequence[tuple[Messages, str]], share: float, rng: np.random.Generator) -> tuple[list[tuple[Messages, str]], int]:
    """Training conversations where a `share` of them have their few-shot turns replaced by
    the final (user, answer) turns of other conversations with the same prompt (the same
    system message and few-shot turns, so the same task). Every one is still a valid chat in
    the same format; the rest keep the fixed few-shot turns that generation uses.
    Returns the conversations and how many were changed."""
    keys = [repr(messages[:-1]) for messages, _ in pairs]
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    out, changed = [], 0
    for i, (messages, answer) in enumerate(pairs):
        head = 1 if messages and messages[0]["role"] == "system" else 0
        shots = (len(messages) - 1 - head) // 2
        group = groups[keys[i]]
        if shots < 1 or len(group) - 1 < shots or rng.random() >= share:
            out.append((messages, answer))
            continue
        turns = []
        for k in rng.choice(len(group) - 1, shots, replace=False):
            j = group[k] if group[k] < i else group[k + 1]  # any member but i (groups are in index order)
            turns += [pairs[j][0][-1], {"role": "assistant", "content": pairs[j][1]}]
        out.append((messages[:head] + turns + messages[-1:], answer))
        changed += 1
    return out, changed


@dataclass(frozen=True)
class Block:
    """Conversations trained together: `shared` tokens common to all (run once), then each
    one's own rest of the sequence."""

    shared: int
    items: tuple[int, ...]


def plan_epoch(data: Sequence[Encoded], cfg: "TinyLlamaConfig", rng: np.random.Generator) -> list[list[Block]]:
    """One epoch of steps, each a list of blocks. Conversations that share their prompt
    prefix with many others (the same system prompt and few-shot turns for a task) go in
    steps of `prompt_groups` blocks of `batch_size / prompt_groups` conversations, each
    prefix run once (2-4x less compute on the Shapes prompts); the others in batches of
    `batch_size` conversations of similar length, which still share the tokens they all
    start with (the system prompt: ~75 of ~365 tokens of a Shapes conversation)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, e in enumerate(data):
        groups.setdefault(tuple(e.ids[: e.n_shared]), []).append(i)
    per_group = max(1, cfg.batch_size // cfg.prompt_groups)
    lengths = np.array([len(e.ids) for e in data])
    alone = [i for members in groups.values() if len(members) < 2 * per_group for i in members]
    batches = _length_batches(lengths, np.array(alone, dtype=int), cfg.batch_size, rng)
    steps = [[Block(common_prefix(data, b, cfg.loss_on_examples), tuple(b))] for b in batches]
    chunks = []
    for key, members in groups.items():
        if len(members) >= 2 * per_group:
            chunks += [Block(len(key), tuple(b)) for b in _length_batches(lengths, np.array(members), per_group, rng)]
    order = rng.permutation(len(chunks))
    steps += [[chunks[c] for c in order[s : s + cfg.prompt_groups]] for s in range(0, len(order), cfg.prompt_groups)]
    return [steps[i] for i in rng.permutation(len(steps))]


def common_prefix(data: Sequence[Encoded], items: Sequence[int], examples: bool) -> int:
    """How many leading tokens a block of `items` can run once for all of them: the tokens
    they all start with, up to the first token any of them learns (with `examples`, its first
    few-shot answer), so the prefix holds no targets and the block's loss is exactly the sum
    of its conversations' losses; at least two tokens of each stay its own."""
    seqs = [data[i].ids for i in items]
    limit = min(min(len(s) - 2 for s in seqs), min(data[i].first_target(examples) for i in items))
    n = 0
    while n < limit and all(s[n] == seqs[0][n] for s in seqs):
        n += 1
    return n


def _length_batches(lengths: np.ndarray, members: np.ndarray, size: int, rng: np.random.Generator) -> list[list[int]]:
    """Shuffled batches of `size` of `members`, each of similar lengths (less padding)."""
    perm = members[rng.permutation(len(members))]
    window = size * 64
    batches = []
    for w in range(0, len(perm), window):
        chunk = perm[w : w + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + size].tolist() for i in range(0, len(chunk), size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _pad(rows: Sequence[Sequence[int]], value: int):
    import torch

    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def block_loss(model: Any, data: Sequence[Encoded], block: Block, pad_id: int, examples: bool, bf16: bool = False):
    """(sum of token losses, number of target tokens) of one block. The shared prefix runs
    once with batch 1; its key/value cache is repeated for every conversation, whose own
    tokens then attend to it: the same logits (and gradients) as running each full sequence."""
    import torch
    import torch.nn.functional as F
    from transformers import DynamicCache

    items = [data[i] for i in block.items]
    p = block.shared
    total = torch.zeros(())
    count = 0
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        cache = None
        if p:
            cache = DynamicCache(config=model.config)
            hidden = model.model(input_ids=_pad([items[0].ids[:p]], pad_id), cache=cache, use_cache=True).last_hidden_state
            y = _pad([items[0].targets(examples)[:p]], IGNORE)
            if (y != IGNORE).any():  # the few-shot answers: the same for the whole block, counted once
                mask = y != IGNORE
                total = total + F.cross_entropy(model.lm_head(hidden[mask]).float(), y[mask], reduction="sum")
                count += int(mask.sum())
            cache.batch_repeat_interleave(len(items))
        x = _pad([e.ids[p:-1] for e in items], pad_id)  # right padding: causal attention keeps it out
        y = _pad([e.targets(examples)[p:] for e in items], IGNORE)
        hidden = model.model(input_ids=x, cache=cache, use_cache=cache is not None).last_hidden_state
        mask = y != IGNORE
        # the output projection only where there is a target: most positions are prompt
        total = total + F.cross_entropy(model.lm_head(hidden[mask]).float(), y[mask], reduction="sum")
        count += int(mask.sum())
    return total, count


# ---------------------------------------------------------------------------- training


def make_model(cfg: TinyLlamaConfig, vocab_size: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads,
        max_position_embeddings=cfg.max_positions,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config).float()


def train_tiny_llama(
    pairs: list[tuple[Messages, str]],
    cfg: TinyLlamaConfig,
    out_path: str | Path,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a tiny Llama on (messages, answer) pairs and write it as a GGUF at `out_path`.

    Returns a report: parameter count, steps, final loss, seconds, tokens/s, vocabulary size,
    the file's sha256 and the sequence lengths.
    """
    import torch

    if not pairs:
        raise ValueError("train_tiny_llama needs at least one (messages, answer) pair")
    out_path = Path(out_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    try:
        return _train(pairs, cfg, out_path, progress)
    finally:
        torch.set_num_threads(threads)


def _train(pairs: list[tuple[Messages, str]], cfg: TinyLlamaConfig, out_path: Path, progress: bool) -> dict[str, Any]:
    import torch
    from tqdm import tqdm

    from ..train.loop import lr_at, native_bf16

    bf16 = native_bf16() if cfg.bf16 is None else cfg.bf16
    rng = np.random.default_rng(cfg.seed)
    pairs, swapped = swap_examples(pairs, cfg.swap_examples, rng)
    texts = [template_text(LLAMA2_CHAT_TEMPLATE)]
    for messages, answer in pairs:
        texts.extend(m["content"] for m in messages)
        texts.append(answer)
    vocab = build_vocab(texts)
    model = make_model(cfg, len(vocab))
    data = _tokenise_with_llama_cpp(model, vocab, pairs, out_path)
    lengths = np.array([len(e.ids) for e in data])
    if lengths.max() > cfg.max_positions:
        raise ValueError(
            f"a conversation is {lengths.max()} tokens long, more than max_positions={cfg.max_positions}; "
            "raise max_positions or shorten the prompts"
        )

    opt = _optimizer(model, cfg)
    plan: list[list[Block]] = []
    losses: list[float] = []
    curve: list[tuple[int, float, float]] = []  # (step, loss, seconds)
    log_every = max(1, cfg.steps // 20)
    n_tokens = 0
    model.train()
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="tiny llama", disable=not progress, mininterval=1.0)
    for step in bar:
        if not plan:
            plan = plan_epoch(data, cfg, rng)
        blocks = plan.pop()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps, "cosine")
        parts = [block_loss(model, data, b, vocab.eos_id, cfg.loss_on_examples, bf16) for b in blocks]
        loss = sum(t for t, _ in parts) / max(1, sum(c for _, c in parts))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        n_tokens += sum(int(lengths[i]) for b in blocks for i in b.items)
        if step % log_every == 0 or step == cfg.steps - 1:
            curve.append((step, round(losses[-1], 4), round(time.perf_counter() - start, 1)))
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    seconds = time.perf_counter() - start
    model.eval()

    export_gguf(model, vocab, LLAMA2_CHAT_TEMPLATE, out_path)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "steps": cfg.steps,
        "final_loss": float(np.mean(losses[-20:])) if losses else float("nan"),
        "train_seconds": round(seconds, 2),
        "tokens_per_second": round(n_tokens / seconds, 1) if seconds > 0 else 0.0,  # conversation tokens, shared prefixes included
        "vocab_size": len(vocab),
        "conversations": len(data),
        "mean_tokens": float(lengths.mean()),
        "max_tokens": int(lengths.max()),
        "with_examples": sum(bool(e.spans) for e in data) if cfg.loss_on_examples else 0,
        "swapped_examples": swapped,
        "prompt_prefixes": len({tuple(e.ids[: e.n_shared]) for e in data}),
        "loss_curve": curve,
        "bf16": bf16,
        "threads": torch.get_num_threads(),
        "path": str(out_path),
        "sha256": sha256_file(out_path),
    }


def _tokenise_with_llama_cpp(model: Any, vocab: Vocab, pairs: Sequence[tuple[Messages, str]], out_path: Path) -> list[Encoded]:
    """Token ids from llama.cpp itself: write the untrained model, load its vocabulary only."""
    untrained = out_path.with_name(out_path.name + ".untrained.tmp")
    try:
        export_gguf(model, vocab, LLAMA2_CHAT_TEMPLATE, untrained)
        tok = load_llama(untrained, n_ctx=256, vocab_only=True)
        try:
            return encode_pairs(tok, pairs, LLAMA2_CHAT_TEMPLATE)
        finally:
            tok.close()
    finally:
        untrained.unlink(missing_ok=True)


def _optimizer(model: Any, cfg: TinyLlamaConfig):
    import torch

    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]  # norms
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.95),
    )
