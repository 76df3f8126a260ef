"""The Shapes profile's small Llama: vocabulary, GGUF export, llama.cpp parity, training, loading."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from eve_fdd.llm.tiny import (
    LLAMA2_CHAT_TEMPLATE,
    ModelFileError,
    Block,
    TinyLlamaConfig,
    block_loss,
    build_vocab,
    common_prefix,
    corpus_words,
    encode_pairs,
    export_gguf,
    load_llama,
    make_model,
    plan_epoch,
    render_prompt,
    sha256_file,
    swap_examples,
    template_text,
    train_tiny_llama,
)

COLORS = ("red", "blue", "green", "yellow", "purple")
KINDS = ("circle", "square", "triangle", "diamond")
BACKGROUNDS = ("black", "navy", "beige")
SYSTEM = "You write edit instructions for videos of shapes. Answer with one JSON object."
SCHEMA = {
    "type": "object",
    "properties": {"instruction": {"type": "string"}, "output_caption": {"type": "string"}},
    "required": ["instruction", "output_caption"],
    "additionalProperties": False,
}


def _example(i: int) -> tuple[str, str]:
    a = f"{COLORS[i % 5]} {KINDS[i % 4]}"
    b = f"{COLORS[(i + 2) % 5]} {KINDS[(i + 1) % 4]}"
    bg = BACKGROUNDS[i % 3]
    user = f"Caption: a small {a} and a large {b} on a {bg} background\nTask: remove"
    answer = json.dumps({"instruction": f"remove the {a}", "output_caption": f"a large {b} on a {bg} background"})
    return user, answer


def _pairs(n: int) -> list[tuple[list[dict], str]]:
    out = []
    for i in range(n):
        shot_user, shot_answer = _example(i + 7)
        user, answer = _example(i)
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": shot_user},
            {"role": "assistant", "content": shot_answer},
            {"role": "user", "content": user},
        ]
        out.append((messages, answer))
    return out


def _texts(pairs) -> list[str]:
    texts = [template_text()]
    for messages, answer in pairs:
        texts += [m["content"] for m in messages] + [answer]
    return texts


PAIRS = _pairs(20)
SMALL = TinyLlamaConfig(hidden_size=64, layers=2, heads=4, intermediate_size=160, max_positions=256, steps=0, batch_size=8, seed=3)


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    """A model with random weights everywhere (norms too), so a wrong Q/K layout shows."""
    vocab = build_vocab(_texts(PAIRS))
    model = make_model(SMALL, len(vocab))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen) if p.ndim == 1 else 0.15 * torch.randn(p.shape, generator=gen))
    path = export_gguf(model, vocab, LLAMA2_CHAT_TEMPLATE, tmp_path_factory.mktemp("random") / "random.gguf")
    return model.eval(), vocab, path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = SMALL.model_copy(update={"steps": 200, "lr": 5e-3, "warmup_steps": 20, "bf16": False})
    path = tmp_path_factory.mktemp("trained") / "tiny.gguf"
    report = train_tiny_llama(PAIRS, cfg, path, progress=False)
    return report, path


def test_template_puts_answer_right_after_inst():
    messages, answer = PAIRS[0]
    prompt = render_prompt(messages)
    assert prompt.startswith("<s>[INST] <<SYS>>\n" + SYSTEM + "\n<</SYS>>\n\n")
    assert prompt.endswith(" [/INST]")
    shot = messages[2]["content"]
    assert f" [/INST]{shot}</s><s>[INST] " in prompt  # a few-shot answer: no space before it
    with pytest.raises(ValueError, match="alternate"):
        render_prompt([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_vocab_makes_each_word_one_token_and_round_trips(random_model):
    _, vocab, path = random_model
    assert vocab.tokens[:3] == ("<unk>", "<s>", "</s>") and vocab.tokens[3] == "<0x00>"
    texts = _texts(PAIRS)
    llm = load_llama(path, n_ctx=64, vocab_only=True)
    try:
        for word in sorted(corpus_words(texts)):
            for text in (word, " " + word):
                ids = llm.tokenize(text.encode(), add_bos=False)
                assert len(ids) == 1, (text, [llm._model.token_get_text(i) for i in ids])
        for text in texts + ["text with unseen wörds ✓ and digits 42"]:
            ids = llm.tokenize(text.encode(), add_bos=False)
            assert llm.detokenize(ids).decode() == text
        # the template's special tokens are parsed as such when the prompt is tokenised
        ids = llm.tokenize(render_prompt(PAIRS[0][0]).encode(), add_bos=False, special=True)
        assert ids[0] == vocab.bos_id and ids.count(vocab.eos_id) == 1
    finally:
        llm.close()


def test_llama_cpp_and_transformers_agree_on_logits(random_model):
    model, _, path = random_model
    tok = load_llama(path, n_ctx=64, vocab_only=True)
    prompts = [e.ids for e in encode_pairs(tok, PAIRS[:3], LLAMA2_CHAT_TEMPLATE)]
    tok.close()
    # f32 KV cache (type 0): the default f16 cache alone moves logits by ~1e-3 of their scale
    llm = load_llama(path, n_ctx=256, n_threads=2, logits_all=True, type_k=0, type_v=0)
    try:
        for ids in prompts + [prompts[0][:7]]:
            llm.reset()
            llm.eval(ids)
            ours = np.array(llm.scores[: len(ids)])
            with torch.no_grad():
                ref = model(torch.tensor([ids])).logits[0].numpy()
            scale = np.abs(ref).max()
            assert scale > 1.0  # random weights: logits far from flat
            assert np.abs(ours - ref).max() < 1e-3 * scale
            assert (ours.argmax(-1) == ref.argmax(-1)).all()
    finally:
        llm.close()


def test_trained_model_answers_through_chat_completion(trained):
    import llama_cpp

    report, path = trained
    assert report["steps"] == 200 and report["final_loss"] < 0.1
    assert report["sha256"] == sha256_file(path)
    assert report["vocab_size"] == len(build_vocab(_texts(PAIRS)))
    assert not [p for p in os.listdir(path.parent) if p.endswith(".tmp")]
    llm = load_llama(path, n_ctx=256, n_threads=2)
    grammar = llama_cpp.LlamaGrammar.from_json_schema(json.dumps(SCHEMA), verbose=False)
    try:
        for messages, answer in PAIRS[:4]:
            out = llm.create_chat_completion(messages, temperature=0, max_tokens=64, repeat_penalty=1.0)
            assert out["choices"][0]["message"]["content"] == answer
            assert out["choices"][0]["finish_reason"] == "stop"
        out = llm.create_chat_completion(PAIRS[5][0], temperature=0, max_tokens=64, repeat_penalty=1.0, grammar=grammar)
        assert out["choices"][0]["message"]["content"] == PAIRS[5][1]
    finally:
        llm.close()


def test_missing_and_corrupt_files_raise_model_file_error(tmp_path, random_model):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelFileError, match="nope.gguf.*missing") as err:
        load_llama(missing)
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, ValueError)

    junk = tmp_path / "junk.gguf"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelFileError, match="junk.gguf.*not a GGUF"):
        load_llama(junk)

    data = random_model[2].read_bytes()
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated.gguf.*could not load"):
        load_llama(truncated)

    header_only = tmp_path / "header.gguf"
    header_only.write_bytes(data[:64])
    with pytest.raises(ModelFileError, match="header.gguf"):
        load_llama(header_only)


def test_config_rejects_unknown_keys_and_bad_heads():
    with pytest.raises(ValueError, match="extra"):
        TinyLlamaConfig(hidden=128)
    with pytest.raises(ValueError, match="heads"):
        TinyLlamaConfig(hidden_size=100, heads=3)


def _same_prompt_pairs(n: int, shot: int = 7, start: int = 0) -> list[tuple[list[dict], str]]:
    """Conversations that share their system message and few-shot turn (as one task's do)."""
    shot_user, shot_answer = _example(shot)
    out = []
    for i in range(n):
        user, answer = _example(start + i)
        head = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": shot_user}, {"role": "assistant", "content": shot_answer}]
        out.append((head + [{"role": "user", "content": user}], answer))
    return out


def test_swap_examples_takes_turns_from_other_conversations_of_the_same_prompt():
    pairs = _same_prompt_pairs(6) + _same_prompt_pairs(5, shot=11, start=30)
    same, changed = swap_examples(pairs, 0.0, np.random.default_rng(0))
    assert same == pairs and changed == 0
    out, changed = swap_examples(pairs, 1.0, np.random.default_rng(0))
    assert changed == len(pairs)
    finals = {(m[-1]["content"], a): i for i, (m, a) in enumerate(pairs)}
    for i, ((messages, answer), (orig, orig_answer)) in enumerate(zip(out, pairs)):
        assert answer == orig_answer and messages[0] == orig[0] and messages[-1] == orig[-1]
        j = finals[(messages[1]["content"], messages[2]["content"])]  # the turn is another conversation's final one
        assert j != i and orig[:-1] == pairs[j][0][:-1]  # never its own, always one with the same prompt
        assert render_prompt(messages)  # still a valid alternating chat


def test_plan_epoch_covers_each_conversation_once_and_shares_prefixes(random_model):
    _, _, path = random_model
    tok = load_llama(path, n_ctx=64, vocab_only=True)
    pairs = _same_prompt_pairs(12) + _same_prompt_pairs(12, shot=11) + PAIRS[10:15]  # own few-shot turns each
    data = encode_pairs(tok, pairs, LLAMA2_CHAT_TEMPLATE)
    system = len(tok.tokenize(SYSTEM.encode(), add_bos=False, special=False))
    tok.close()
    cfg = SMALL.model_copy(update={"batch_size": 4, "prompt_groups": 2})
    steps = plan_epoch(data, cfg, np.random.default_rng(1))
    seen = sorted(i for step in steps for block in step for i in block.items)
    assert seen == list(range(len(data)))
    for step in steps:
        for block in step:
            prefixes = {tuple(data[i].ids[: block.shared]) for i in block.items}
            assert len(prefixes) == 1  # every conversation of a block starts with its shared tokens
    assert any(block.shared > 0 for step in steps for block in step)
    lone = [block for step in steps for block in step if block.items[0] >= 24]  # own few-shot turns each
    for block in lone:  # they share the system prompt: run once, up to (not into) the first answer
        assert block.shared == common_prefix(data, block.items, cfg.loss_on_examples) > system
        assert all(t == -100 for i in block.items for t in data[i].targets(True)[: block.shared])


def test_a_block_of_different_prompts_shares_their_common_prefix_with_the_same_loss(random_model):
    model, vocab, path = random_model
    tok = load_llama(path, n_ctx=64, vocab_only=True)
    data = encode_pairs(tok, PAIRS[:3], LLAMA2_CHAT_TEMPLATE)  # the same system prompt, different few-shot turns
    tok.close()
    for examples in (False, True):
        shared = common_prefix(data, (0, 1, 2), examples)
        first = min(e.spans[0][0] if examples else e.n_prompt for e in data)  # first learned token
        assert 0 < shared < first and len({tuple(e.ids[:shared]) for e in data}) == 1
        assert len({tuple(e.ids[: shared + 1]) for e in data}) > 1 or shared == first - 1  # as long as it can be
        assert shared <= min(e.first_target(examples) for e in data)
        total, count = block_loss(model, data, Block(shared, (0, 1, 2)), vocab.eos_id, examples)
        alone = [block_loss(model, data, Block(0, (i,)), vocab.eos_id, examples) for i in range(3)]
        assert count == sum(c for _, c in alone)  # nothing counted once for the block: no target in the prefix
        assert torch.allclose(total, sum(t for t, _ in alone), rtol=1e-4)


def test_block_loss_with_a_shared_prefix_equals_the_loss_on_full_sequences(random_model):
    model, vocab, path = random_model
    tok = load_llama(path, n_ctx=64, vocab_only=True)
    data = encode_pairs(tok, _same_prompt_pairs(3), LLAMA2_CHAT_TEMPLATE)
    tok.close()
    shared = data[0].n_shared
    assert shared > 0 and all(e.ids[:shared] == data[0].ids[:shared] for e in data)
    for examples in (False, True):
        total, count = block_loss(model, data, Block(shared, (0, 1, 2)), vocab.eos_id, examples)
        ref, ref_count = 0.0, 0
        for e in data:  # each conversation alone, the whole sequence at once
            t, c = block_loss(model, data, Block(0, (data.index(e),)), vocab.eos_id, examples)
            ref, ref_count = ref + t, ref_count + c
        # the few-shot answer in the shared prefix is counted once per block, not once per conversation
        dup = sum(end - start for start, end in data[0].spans) if examples else 0
        assert count == ref_count - 2 * dup
        if not examples:
            assert torch.allclose(total, ref, rtol=1e-4)
        with torch.no_grad():
            y = torch.tensor(data[1].targets(examples))
            logits = model(torch.tensor([data[1].ids[:-1]])).logits[0]
            direct = torch.nn.functional.cross_entropy(logits[y != -100], y[y != -100], reduction="sum")
        single, _ = block_loss(model, data, Block(0, (1,)), vocab.eos_id, examples)
        assert torch.allclose(single, direct, rtol=1e-4)
