"""Instruction triplets from a local Llama: prompt, constrained decoding, validation, retries, cache.

For each request (a caption and a task, plus a subject or style for those sets) the model
answers in JSON under a grammar: on Shapes one built from the request's scene (llm/gbnf.py:
only valid instructions, each with the caption it makes), else the JSON schema's. Every
answer is validated (JSON, schema, task, non-empty, printable, length, output caption
different from the input; on Shapes also the instruction parsed against the scene and the
output caption checked against the edited scene). A failed answer is retried with a new seed
up to `max_attempts`, then the request is recorded as rejected with the reason; every failed
attempt is also kept as a reject row. Completions are cached by (caption, task, concept,
prompt version, model hash, sampling, seed, the scene grammar's digest), so a rerun reads
them back instead of calling the model.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from ..config import InstructionsConfig, LlmConfig
from ..world import InstructionError, Scene, caption, parse_instruction, vocab
from ..world.scene import random_velocity
from . import gbnf, prompts

ANSWER_KEYS = ("task", "instruction", "output_caption")


@dataclass(frozen=True)
class Request:
    row_id: str
    set: str  # videos | subject | style
    video_id: str
    task: str
    caption: str
    concept: str | None = None
    scene: Scene | None = None  # Shapes: the input scene, to check the answer against
    seed: int = 0


@dataclass
class Rejection(Exception):
    reason: str
    detail: str


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    cached: bool = False


class ChatModel(Protocol):
    def create_chat_completion(self, **kwargs: Any) -> dict[str, Any]: ...


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed from anything printable (llama.cpp seeds are 32-bit)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


class Cache:
    """Completions on disk (sqlite), keyed by everything that determines them."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path)
        self.db.execute("CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    @staticmethod
    def key(**parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> Completion | None:
        row = self.db.execute("SELECT value FROM completions WHERE key = ?", (key,)).fetchone()
        return Completion(**json.loads(row[0]), cached=True) if row else None

    def put(self, key: str, c: Completion) -> None:
        value = json.dumps({"text": c.text, "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens, "seconds": c.seconds})
        self.db.execute("INSERT OR REPLACE INTO completions VALUES (?, ?)", (key, value))
        self.db.commit()

    def close(self) -> None:
        self.db.close()


@dataclass
class Stats:
    model_calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_seconds: float = 0.0  # time inside the model, calls only (not cache reads)

    def add(self, c: Completion) -> None:
        if c.cached:
            self.cache_hits += 1
            return
        self.model_calls += 1
        self.prompt_tokens += c.prompt_tokens
        self.completion_tokens += c.completion_tokens
        self.model_seconds += c.seconds

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.model_seconds if self.model_seconds else 0.0


@dataclass
class Writer:
    """A loaded chat model plus how to sample from it and which model it is."""

    model: ChatModel
    model_name: str
    model_sha256: str
    profile: str
    sampling: LlmConfig
    grammar: Any = None  # llama_cpp.LlamaGrammar for requests without a scene; None only for models that need none (tests)
    cache: Cache | None = None
    stats: Stats = field(default_factory=Stats)
    scene_grammar: str = "json"  # scene | instruction | json: InstructionsConfig.grammar
    _scene_grammars: dict = field(default_factory=dict, repr=False)

    def grammar_for(self, request: Request) -> tuple[Any, str | None]:
        """The grammar a request is decoded under and its digest (None for the JSON-schema
        grammar). Requests with a scene get one built from it unless `scene_grammar` is json;
        raises Rejection("not_applicable") when the scene has no valid edit of the task."""
        if request.scene is None or self.scene_grammar == "json":
            return self.grammar, None
        key = (request.caption, request.task, request.concept)  # a Shapes caption names all a valid edit depends on
        if key not in self._scene_grammars:
            from llama_cpp import LlamaGrammar

            text = gbnf.scene_grammar_text(request.scene, request.task, request.concept, bind_caption=self.scene_grammar == "scene")
            if text is None:
                raise Rejection("not_applicable", f"no {request.task} edit applies to {request.caption!r}")
            self._scene_grammars = {key: (LlamaGrammar.from_string(text, verbose=False), gbnf.digest(text))}
        return self._scene_grammars[key]

    def complete(self, request: Request, seed: int) -> Completion:
        s = self.sampling
        grammar, grammar_digest = self.grammar_for(request)
        key = Cache.key(
            caption=request.caption, task=request.task, concept=request.concept, prompt=prompts.PROMPT_VERSION,
            model=self.model_sha256, seed=seed, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens,
            repeat_penalty=s.repeat_penalty, **({"grammar": grammar_digest} if grammar_digest else {}),
        )
        hit = self.cache.get(key) if self.cache else None
        if hit is not None:
            self.stats.add(hit)
            return hit
        t0 = time.perf_counter()
        out = self.model.create_chat_completion(
            messages=prompts.messages(self.profile, request.caption, request.task, request.concept),
            grammar=grammar, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, seed=seed,
            repeat_penalty=s.repeat_penalty,
        )
        seconds = time.perf_counter() - t0
        usage = out.get("usage") or {}
        text = (out.get("choices") or [{}])[0].get("message", {}).get("content") or ""
        c = Completion(text, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)), seconds)
        if self.cache:
            self.cache.put(key, c)
        self.stats.add(c)
        return c


def _printable(text: str) -> bool:
    return all(ch == " " or unicodedata.category(ch)[0] not in ("C", "Z") for ch in text)


def check_answer(text: str, request: Request, limits: InstructionsConfig, speed: tuple[float, float]) -> tuple[dict, str | None]:
    """The validated answer and (Shapes) the edit spec JSON; raises Rejection saying why not."""
    if not text.strip():
        raise Rejection("empty_output", "the model returned nothing")
    try:
        answer = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Rejection("malformed_json", f"not JSON: {exc}") from None
    if not isinstance(answer, dict) or sorted(answer) != sorted(ANSWER_KEYS) or not all(isinstance(answer[k], str) for k in ANSWER_KEYS):
        raise Rejection("schema", f"expected an object with string fields {list(ANSWER_KEYS)}, got {text[:200]!r}")
    if answer["task"] != request.task:
        raise Rejection("wrong_task", f"asked for a {request.task} edit, the answer is a {answer['task']!r} edit")
    for key, limit in (("instruction", limits.max_instruction_chars), ("output_caption", limits.max_caption_chars)):
        value = answer[key]
        if not value.strip():
            raise Rejection("empty_text", f"{key} is empty")
        if not _printable(value):
            raise Rejection("control_characters", f"{key} has control or non-printable characters: {value[:200]!r}")
        if len(value) > limit:
            raise Rejection("too_long", f"{key} has {len(value)} characters, the limit is {limit}")
    if " ".join(answer["output_caption"].lower().split()) == " ".join(request.caption.lower().split()):
        raise Rejection("unchanged_caption", "the output caption is the input caption")
    if request.scene is None:
        return answer, None
    velocity = random_velocity(np.random.default_rng(request.seed), speed)
    try:
        spec, edited = parse_instruction(answer["instruction"], request.task, request.scene, velocity, allow_reserved=request.concept is not None)
    except InstructionError as exc:
        raise Rejection(exc.reason, exc.detail) from None
    if request.concept and request.concept not in (spec.kind, spec.style):
        raise Rejection("wrong_concept", f"asked for {request.concept!r}, the instruction is {answer['instruction']!r}")
    expected = caption(edited)
    if answer["output_caption"] != expected:
        raise Rejection("caption_mismatch", f"output caption {answer['output_caption']!r} does not describe the edited scene ({expected!r})")
    return answer, spec.to_json()


def generate_one(writer: Writer, request: Request, limits: InstructionsConfig, speed: tuple[float, float], stage: str) -> tuple[dict, list[dict]]:
    """One instructions row (accepted, or rejected after every attempt) and the reject rows
    of its failed attempts."""
    rejects: list[dict] = []
    tokens = 0
    for attempt in range(limits.max_attempts):
        seed = derive_seed(request.seed, attempt)
        try:
            c = writer.complete(request, seed)
        except Rejection as r:  # nothing to ask: the scene has no valid edit of the task
            rejects.append(dict(stage=stage, item=f"{request.row_id}#{attempt}", reason=r.reason, detail=f"{request.row_id}: {r.detail}"))
            return _row(writer, request, seed, attempt + 1, "", "rejected", r.reason, {}, None, tokens), rejects
        tokens += c.completion_tokens
        try:
            answer, spec = check_answer(c.text, request, limits, speed)
        except Rejection as r:
            rejects.append(dict(stage=stage, item=f"{request.row_id}#{attempt}", reason=r.reason, detail=f"{request.row_id} (seed {seed}): {r.detail}"))
            continue
        return _row(writer, request, seed, attempt + 1, c.text, "accepted", None, answer, spec, tokens), rejects
    last = rejects[-1]["reason"]
    return _row(writer, request, seed, limits.max_attempts, c.text, "rejected", last, {}, None, tokens), rejects


def _row(writer: Writer, r: Request, seed: int, attempts: int, raw: str, status: str, reason: str | None, answer: dict, spec: str | None, tokens: int) -> dict:
    return dict(
        row_id=r.row_id, set=r.set, video_id=r.video_id, task=r.task, concept=r.concept, input_caption=r.caption,
        instruction=answer.get("instruction", ""), output_caption=answer.get("output_caption", ""), edit_spec=spec,
        model=writer.model_name, model_sha256=writer.model_sha256, prompt_version=prompts.PROMPT_VERSION, seed=seed,
        attempts=attempts, raw_output=raw, status=status, reason=reason, completion_tokens=tokens,
    )


def generate(
    writer: Writer, requests: Iterable[Request], limits: InstructionsConfig, speed: tuple[float, float], stage: str, progress: bool = True
) -> tuple[list[dict], list[dict]]:
    """Rows for every request, in the order given, and every failed attempt as a reject row.
    Requests are run grouped by (task, concept) so llama.cpp reuses the shared few-shot prefix."""
    requests = list(requests)
    order = sorted(range(len(requests)), key=lambda i: (requests[i].task, requests[i].concept or ""))
    rows: dict[int, dict] = {}
    rejects: list[dict] = []
    for i in tqdm(order, desc=f"{stage}: generate", unit="req", disable=not progress):
        rows[i], failed = generate_one(writer, requests[i], limits, speed, stage)
        rejects += failed
    return [rows[i] for i in range(len(requests))], rejects


def json_grammar(tasks: tuple[str, ...] = vocab.ALL_TASKS):
    """The JSON-schema grammar answers without a scene are decoded under."""
    return gbnf.json_grammar(tasks)
