"""Prompts: one chat per (caption, task), with few-shot turns, answered in JSON.

The same messages go to the real Llama-2 chat model (profile `full`) and to the small
model the Shapes profile trains (which is trained on exactly these messages). The answer is
a JSON object {"task", "instruction", "output_caption"}; decoding is constrained by
`answer_schema`. Bump PROMPT_VERSION whenever a prompt or few-shot example changes: it is
part of the generation cache key and of every row.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..world import caption, make_edit, random_scene, vocab

PROMPT_VERSION = "v1"

SYSTEM = (
    "You write image editing instructions. You get the caption of an image and an editing task. "
    "Reply with JSON: the task, one short instruction of that task that fits the image, and the caption "
    "of the image after the edit. Change only what the instruction says."
)

TASK_HINTS = {
    "add": "add one new object and say where",
    "remove": "remove one object that is in the image",
    "background": "change the background",
    "texture": "change the texture of one object",
    "local": "change the colour or size of one object",
    "style": "change the rendering style of the whole image",
    "global": "change the lighting of the whole image",
    "replace": "replace one object with the subject",
}

# Few-shot turns for real videos (profile `full`), written by hand: (caption, instruction, output caption).
FULL_EXAMPLES: dict[str, list[tuple[str, str, str]]] = {
    "add": [
        ("a dog running on a beach", "add a red ball in front of the dog", "a dog running on a beach after a red ball"),
        ("a man riding a bicycle down a city street", "add a parrot on his shoulder", "a man with a parrot on his shoulder riding a bicycle down a city street"),
    ],
    "remove": [
        ("a cat and a vase of flowers on a wooden table", "remove the vase of flowers", "a cat on a wooden table"),
        ("two children flying a kite in a park", "remove the kite", "two children running in a park"),
    ],
    "background": [
        ("a woman dancing in a studio", "put her on a snowy mountain top", "a woman dancing on a snowy mountain top"),
        ("a car driving on a highway", "change the background to a desert road", "a car driving on a desert road"),
    ],
    "texture": [
        ("a horse galloping across a field", "make the horse look like it is made of gold", "a golden horse galloping across a field"),
        ("a teapot on a kitchen counter", "make the teapot knitted wool", "a knitted wool teapot on a kitchen counter"),
    ],
    "local": [
        ("a girl in a blue dress walking in the rain", "make her dress red", "a girl in a red dress walking in the rain"),
        ("a small boat sailing on a lake", "make the boat much larger", "a large boat sailing on a lake"),
    ],
    "style": [
        ("a train crossing a bridge", "make it a watercolor painting", "a watercolor painting of a train crossing a bridge"),
        ("a chef cooking in a restaurant kitchen", "turn it into a pencil sketch", "a pencil sketch of a chef cooking in a restaurant kitchen"),
    ],
    "global": [
        ("a lighthouse by the sea at noon", "make it night", "a lighthouse by the sea at night"),
        ("a street market on a sunny day", "make it a rainy autumn day", "a street market on a rainy autumn day"),
    ],
    "replace": [
        ("a dog sitting on a sofa", "replace the dog with a <subject>", "a <subject> sitting on a sofa"),
        ("a cup of coffee next to a laptop", "replace the cup with a <subject>", "a <subject> next to a laptop"),
    ],
}

FEW_SHOT = 2  # examples per task
_EXAMPLE_SEED = 2_000_000_000  # Shapes few-shot scenes come from seeds the data never uses


def answer(task: str, instruction: str, output_caption: str) -> str:
    """The assistant's reply, exactly as the model is trained to write it."""
    return json.dumps({"task": task, "instruction": instruction, "output_caption": output_caption})


def answer_schema(tasks: tuple[str, ...]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "task": {"type": "string", "enum": list(tasks)},
            "instruction": {"type": "string"},
            "output_caption": {"type": "string"},
        },
        "required": ["task", "instruction", "output_caption"],
        "additionalProperties": False,
    }


def user_message(caption_text: str, task: str, concept: str | None = None) -> str:
    lines = [f"Task: {task} ({TASK_HINTS[task]})"]
    if concept:
        lines.append(f"{'Style' if task == 'style' else 'Subject'}: {concept}")
    lines.append(f"Caption: {caption_text}")
    return "\n".join(lines)


def shapes_examples(task: str, concept: str | None = None) -> list[tuple[str, str, str]]:
    """Few-shot triplets for the Shapes world, from the world's own edits (deterministic)."""
    out = []
    for i in range(FEW_SHOT):
        seed = _EXAMPLE_SEED + 10 * vocab.ALL_TASKS.index(task) + i
        scene = random_scene(seed)
        edit = make_edit(scene, task, np.random.default_rng(seed), allow_reserved=concept is not None, concept=concept)
        out.append((caption(scene), edit.instruction, edit.output_caption))
    return out


def examples(profile: str, task: str, concept: str | None = None) -> list[tuple[str, str, str]]:
    if profile == "shapes":
        return shapes_examples(task, concept)
    subject = concept or "robot"
    return [tuple(t.replace("<subject>", subject) for t in ex) for ex in FULL_EXAMPLES[task][:FEW_SHOT]]


def messages(profile: str, caption_text: str, task: str, concept: str | None = None) -> list[dict[str, str]]:
    """System prompt, few-shot user/assistant turns, then the question."""
    chat = [{"role": "system", "content": SYSTEM}]
    for cap, instruction, out in examples(profile, task, concept):
        chat.append({"role": "user", "content": user_message(cap, task, concept)})
        chat.append({"role": "assistant", "content": answer(task, instruction, out)})
    chat.append({"role": "user", "content": user_message(caption_text, task, concept)})
    return chat


def training_pairs(count: int, seed: int, speed: tuple[float, float] = (0.02, 0.06)) -> list[tuple[list[dict], str]]:
    """(messages, answer) pairs for training the Shapes model: every task, and the subject
    and style sets' requests, on scenes from seeds disjoint from the video set's."""
    requests = [(t, None) for t in vocab.TASKS] * 2  # the seven tasks are most of the data
    requests += [(t, s) for t in ("add", "replace") for s in vocab.SUBJECTS]
    requests += [("style", s) for s in vocab.RESERVED_STYLES]
    pairs = []
    for i in range(count):
        rng = np.random.default_rng([seed, 1_000_003, i])
        scene = random_scene(int(rng.integers(2**62)))
        task, concept = requests[i % len(requests)]
        if task == "add" and len(scene.shapes) >= 5 or task == "remove" and len(scene.shapes) < 2:
            task, concept = "background", None
        edit = make_edit(scene, task, rng, speed, allow_reserved=concept is not None, concept=concept)
        pairs.append((messages("shapes", caption(scene), task, concept), answer(task, edit.instruction, edit.output_caption)))
    return pairs
