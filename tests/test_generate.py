"""Validation, retries, rejects and the cache of instruction generation, with a scripted chat
model standing in for llama.cpp (the real GGUF path is tested in test_llm_tiny.py and the
end-to-end pipeline)."""

import json

import pytest

from eve_fdd.config import Config
from eve_fdd.data import tables
from eve_fdd.llm import generate as gen
from eve_fdd.llm import prompts
from eve_fdd.world import EditSpec, Scene, Shape, apply_edit, caption

SCENE = Scene("navy", (Shape("circle", "red", "small", x=0.3, y=0.3), Shape("square", "blue", "large", "striped", 0.7, 0.7)))
CAPTION = caption(SCENE)
REMOVED = caption(apply_edit(SCENE, EditSpec("remove", target="red circle")))
GOOD = json.dumps({"task": "remove", "instruction": "remove the red circle", "output_caption": REMOVED})


class Scripted:
    """A chat model that answers from a list, one answer per call, and records the calls."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = []

    def create_chat_completion(self, **kw):
        self.calls.append(kw)
        text = self.answers.pop(0) if self.answers else GOOD
        return {"choices": [{"message": {"content": text}}], "usage": {"prompt_tokens": 100, "completion_tokens": 20}}


CFG = Config()


def writer(model, cache=None, profile="shapes"):
    return gen.Writer(model, "fake.gguf", "0" * 64, profile, CFG.llm, grammar=None, cache=cache)


def request(task="remove", scene=SCENE, caption_text=CAPTION, concept=None):
    return gen.Request(row_id=f"v0/{task}", set="videos", video_id="v0", task=task, caption=caption_text, concept=concept, scene=scene, seed=7)


def run(model, req=None, cache=None):
    return gen.generate_one(writer(model, cache), req or request(), CFG.instructions, CFG.world.speed, "instructions")


def test_good_answer_is_accepted_first_try_with_its_edit():
    model = Scripted([GOOD])
    row, rejects = run(model)
    assert rejects == [] and row["status"] == "accepted" and row["attempts"] == 1
    assert row["instruction"] == "remove the red circle" and row["output_caption"] == REMOVED
    spec = EditSpec.from_json(row["edit_spec"])
    assert caption(apply_edit(SCENE, spec)) == REMOVED  # the ground truth can be rendered from the row
    assert row["prompt_version"] == prompts.PROMPT_VERSION and row["raw_output"] == GOOD
    # the model got the chat prompt with few-shot turns, and the sampling params
    call = model.calls[0]
    assert call["messages"][0]["role"] == "system" and call["messages"][-1]["content"].endswith(CAPTION)
    assert sum(m["role"] == "assistant" for m in call["messages"]) == prompts.FEW_SHOT
    assert call["temperature"] == CFG.llm.temperature and call["max_tokens"] == CFG.llm.max_tokens


def answer(**over):
    a = {"task": "remove", "instruction": "remove the red circle", "output_caption": REMOVED}
    a.update(over)
    return json.dumps(a)


@pytest.mark.parametrize(
    "bad,reason",
    [
        ("", "empty_output"),
        ('{"task": "remove", "instruction": "remove the', "malformed_json"),
        ('["remove"]', "schema"),
        (json.dumps({"task": "remove", "instruction": "remove the red circle"}), "schema"),
        (answer(task="add"), "wrong_task"),
        (answer(instruction="  "), "empty_text"),
        (answer(instruction="remove the red\x07 circle"), "control_characters"),
        (answer(output_caption=REMOVED + "\n"), "control_characters"),
        (answer(instruction="remove the red circle " + "now " * 60), "too_long"),
        (answer(output_caption=CAPTION), "unchanged_caption"),
        (answer(instruction="remove the green triangle"), "unknown_object"),
        (answer(instruction="remove the teal circle"), "unknown_word"),
        (answer(instruction="paint it all black"), "unparseable"),
        (answer(output_caption="a large blue striped square on a black background"), "caption_mismatch"),
    ],
)
def test_bad_answer_is_retried_with_a_new_seed_and_kept_as_a_reject(bad, reason):
    model = Scripted([bad, GOOD])
    row, rejects = run(model)
    assert row["status"] == "accepted" and row["attempts"] == 2
    assert [r["reason"] for r in rejects] == [reason]
    assert rejects[0]["item"] == "v0/remove#0" and "v0/remove" in rejects[0]["detail"]
    seeds = [c["seed"] for c in model.calls]
    assert len(set(seeds)) == 2 and row["seed"] == seeds[1]


def test_rejected_after_every_attempt():
    model = Scripted(["nope"] * CFG.instructions.max_attempts)
    row, rejects = run(model)
    assert row["status"] == "rejected" and row["reason"] == "malformed_json"
    assert row["attempts"] == CFG.instructions.max_attempts == len(rejects) == len(model.calls)
    assert row["instruction"] == "" and row["edit_spec"] is None
    assert tables.INSTRUCTIONS.check_row(row) is None


def test_rows_fit_the_instructions_table(tmp_path):
    rows = [run(Scripted([GOOD]))[0], run(Scripted(["x"] * 9))[0]]
    rows[1] = dict(rows[1], row_id="v1/remove", video_id="v1")
    tables.write_table(tables.INSTRUCTIONS, rows, tmp_path / "i.parquet")
    assert tables.read_table(tables.INSTRUCTIONS, tmp_path / "i.parquet") == rows


def test_subject_request_must_use_the_subject():
    replaced = caption(apply_edit(SCENE, EditSpec("replace", target="red circle", kind="star"), allow_reserved=True))
    req = request(task="replace", concept="cross")
    wrong = json.dumps({"task": "replace", "instruction": "replace the red circle with a star", "output_caption": replaced})
    row, rejects = run(Scripted([wrong] * CFG.instructions.max_attempts), req)
    assert row["status"] == "rejected" and {r["reason"] for r in rejects} == {"wrong_concept"}


def test_full_profile_has_no_scene_and_checks_text_only():
    req = request(task="background", scene=None, caption_text="a dog running on a beach")
    ok = json.dumps({"task": "background", "instruction": "put the dog in a forest", "output_caption": "a dog running in a forest"})
    row, rejects = run(Scripted([ok]), req)
    assert row["status"] == "accepted" and row["edit_spec"] is None and rejects == []
    full = writer(Scripted([ok]), profile="full")
    full.complete(req, 1)
    few_shot = full.model.calls[0]["messages"][1]["content"]
    assert few_shot.endswith(prompts.FULL_EXAMPLES["background"][0][0])  # hand-written real-video examples


def test_cache_means_a_rerun_does_not_call_the_model(tmp_path):
    cache = gen.Cache(tmp_path / "c.sqlite")
    reqs = [request(), request(task="global")]
    glob = json.dumps({"task": "global", "instruction": "make it dusk", "output_caption": CAPTION + ", at dusk"})
    first = Scripted(["bad", glob, GOOD])  # asked grouped by task: global first, then remove
    w1 = writer(first, cache)
    rows1, rej1 = gen.generate(w1, reqs, CFG.instructions, CFG.world.speed, "instructions", progress=False)
    assert w1.stats.model_calls == 3 and w1.stats.cache_hits == 0
    cache.close()
    second = Scripted([])  # would answer GOOD to everything: the cache must be what answers
    w2 = writer(second, gen.Cache(tmp_path / "c.sqlite"))
    rows2, rej2 = gen.generate(w2, reqs, CFG.instructions, CFG.world.speed, "instructions", progress=False)
    assert second.calls == [] and w2.stats.cache_hits == 3
    assert rows2 == rows1 and rej2 == rej1
    # a different model hash is a different key
    w3 = gen.Writer(Scripted([]), "other.gguf", "1" * 64, "shapes", CFG.llm, cache=gen.Cache(tmp_path / "c.sqlite"))
    gen.generate(w3, reqs[:1], CFG.instructions, CFG.world.speed, "instructions", progress=False)
    assert w3.stats.model_calls == 1


def test_generate_keeps_request_order_and_counts_tokens():
    reqs = [request(task="remove"), request(task="global"), request(task="remove")]
    glob = json.dumps({"task": "global", "instruction": "make it dusk", "output_caption": CAPTION + ", at dusk"})
    model = Scripted([glob, GOOD, GOOD])  # asked grouped by task (global, then both removes)
    w = writer(model)
    rows, _ = gen.generate(w, reqs, CFG.instructions, CFG.world.speed, "instructions", progress=False)
    assert [r["task"] for r in rows] == ["remove", "global", "remove"]
    assert all(r["status"] == "accepted" for r in rows)
    assert w.stats.completion_tokens == 60 and w.stats.tokens_per_second > 0


def test_derive_seed_is_stable_and_31_bit():
    assert gen.derive_seed(1, "v0/add") == gen.derive_seed(1, "v0/add") != gen.derive_seed(2, "v0/add")
    assert 0 <= gen.derive_seed("x") < 2**31
