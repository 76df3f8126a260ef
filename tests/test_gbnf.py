"""The scene grammar (llm/gbnf.py): decoded under it, every answer is a valid edit of the
request's scene with the caption it makes, even from a model with random weights."""

from __future__ import annotations

import json

import pytest
import torch

from eve_fdd.config import Config
from eve_fdd.llm import gbnf, prompts
from eve_fdd.llm import generate as gen
from eve_fdd.llm.tiny import LLAMA2_CHAT_TEMPLATE, TinyLlamaConfig, build_vocab, export_gguf, load_llama, make_model, template_text
from eve_fdd.world import Scene, Shape, caption, random_scene, valid_edits

CFG = Config()
TWO = Scene("navy", (Shape("circle", "red", "small", x=0.3, y=0.3), Shape("square", "blue", "large", "striped", 0.7, 0.7)))


def test_choice_rules_share_equal_subtrees_and_keep_every_ending():
    root, rules = gbnf.choice_rules({"make it dusk": "A", "make it warm": "A", "remove it": "B"})
    text = " ".join([root, *rules])
    for piece in ('"make it "', '"dusk"', '"warm"', '"remove it"'):
        assert piece in text
    assert text.count("A") == 2 and text.count("B") == 1
    # the two region branches of an add lead to the one rule of their shared caption
    root, rules = gbnf.choice_rules({"add a x in the top left": "c0", "add a x in the center": "c0", "add a y in the center": "c1"})
    assert rules == ['n0 ::= ("center" c0 | "top left" c0)', 'n1 ::= ("x in the " n0 | "y in the center" c1)']


def test_scene_grammar_lists_the_answers_of_the_valid_edits():
    text = gbnf.scene_grammar_text(TWO, "remove")
    assert '"remove the " n0' in text and '"blue square"' in text and '"red circle"' in text  # the trie: shared prefix once
    for e in valid_edits(TWO, "remove"):
        assert e.output_caption in text
    assert text.startswith('root ::= "{\\"task\\": \\"remove\\", \\"instruction\\": \\""')
    assert "blue circle" not in text  # named only with its own colour
    free = gbnf.scene_grammar_text(TWO, "remove", bind_caption=False)
    assert caption(TWO) not in free and gbnf.FREE_STRING in free
    assert gbnf.scene_grammar_text(Scene("navy", (Shape("circle", "red", "small", x=0.3, y=0.3),)), "remove") is None


@pytest.fixture(scope="module")
def random_gguf(tmp_path_factory):
    """A Llama with random weights on the Shapes prompts' vocabulary: it writes nothing valid
    unless a grammar makes it."""
    texts = [template_text()]
    for messages, answer in prompts.training_pairs(40, seed=5):
        texts += [m["content"] for m in messages] + [answer]
    vocab = build_vocab(texts)
    cfg = TinyLlamaConfig(hidden_size=32, layers=1, heads=2, intermediate_size=64, max_positions=1024, steps=0, seed=1)
    model = make_model(cfg, len(vocab))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g) if p.ndim == 1 else 0.5 * torch.randn(p.shape, generator=g))
    return export_gguf(model, vocab, LLAMA2_CHAT_TEMPLATE, tmp_path_factory.mktemp("random-llama") / "random.gguf")


def _writer(path, mode, cache=None):
    model = load_llama(path, n_ctx=1024, n_threads=1, seed=0)
    sampling = CFG.llm.model_copy(update={"temperature": 1.0, "max_tokens": 400})
    return gen.Writer(model, "random.gguf", "0" * 64, "shapes", sampling, grammar=gen.json_grammar(), cache=cache, scene_grammar=mode)


def _request(scene, task, concept=None, i=0):
    return gen.Request(row_id=f"v{i}/{task}", set="videos", video_id=f"v{i}", task=task, caption=caption(scene), concept=concept,
                       scene=scene, seed=gen.derive_seed(i, task))


def test_random_model_under_the_scene_grammar_writes_only_valid_answers(random_gguf, tmp_path):
    writer = _writer(random_gguf, "scene")
    limits = CFG.instructions.model_copy(update={"max_attempts": 1})
    scenes = [TWO, random_scene(11), random_scene(12)]
    requests = [_request(s, t, i=i) for i, s in enumerate(scenes) for t in ("add", "remove", "texture", "local", "background", "global")
                if gbnf.scene_grammar_text(s, t) is not None]
    requests += [_request(TWO, "replace", "star"), _request(TWO, "style", "sketch"), _request(TWO, "add", "cross")]
    rows, rejects = gen.generate(writer, requests, limits, CFG.world.speed, "instructions", progress=False)
    assert rejects == [] and all(r["status"] == "accepted" and r["attempts"] == 1 for r in rows)
    for r, q in zip(rows, requests):
        answers = {prompts.answer(q.task, e.instruction, e.output_caption)
                   for e in valid_edits(q.scene, q.task, allow_reserved=q.concept is not None, concept=q.concept)}
        assert r["raw_output"] in answers
    # the same model under the JSON schema alone: not one of them valid
    rows, _ = gen.generate(_writer(random_gguf, "json"), requests[:6], limits, CFG.world.speed, "instructions", progress=False)
    assert not any(r["status"] == "accepted" for r in rows)
    # and it chooses among them: repeated seeds of one request give several edits
    many = [gen.Request(**{**requests[1].__dict__, "row_id": f"r{i}", "seed": i}) for i in range(12)]
    rows, _ = gen.generate(writer, many, limits, CFG.world.speed, "instructions", progress=False)
    assert len({r["instruction"] for r in rows}) >= 2


def test_instruction_mode_binds_the_instruction_and_leaves_the_caption(random_gguf):
    writer = _writer(random_gguf, "instruction")
    valid = {e.instruction for e in valid_edits(TWO, "local")}
    for seed in range(4):
        c = writer.complete(_request(TWO, "local"), seed)
        answer = json.loads(c.text)  # the grammar's free caption has no escapes: always JSON
        assert answer["task"] == "local" and answer["instruction"] in valid


def test_grammar_modes_key_the_cache_apart_and_json_mode_keeps_the_schema(random_gguf, tmp_path):
    cache = gen.Cache(tmp_path / "c.sqlite")
    scene_writer, json_writer = _writer(random_gguf, "scene", cache), _writer(random_gguf, "json", cache)
    req = _request(TWO, "remove")
    assert json_writer.grammar_for(req) == (json_writer.grammar, None)
    grammar, digest = scene_writer.grammar_for(req)
    assert grammar is not json_writer.grammar and digest == gbnf.digest(gbnf.scene_grammar_text(TWO, "remove"))
    scene_writer.complete(req, 0)
    json_writer.complete(req, 0)
    assert scene_writer.stats.model_calls == 1 and json_writer.stats.model_calls == 1  # no answer read across grammars
    scene_writer.complete(req, 0)
    assert scene_writer.stats.cache_hits == 1
    # a request whose scene has no valid edit of its task is a counted reject, never a model call
    lone = _request(Scene("navy", (Shape("circle", "red", "small", x=0.3, y=0.3),)), "remove")
    row, rejects = gen.generate_one(scene_writer, lone, CFG.instructions, CFG.world.speed, "instructions")
    assert row["status"] == "rejected" and row["reason"] == "not_applicable" and len(rejects) == 1
    assert scene_writer.stats.model_calls == 1
