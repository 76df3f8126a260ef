"""Decoding grammars (llama.cpp GBNF) for the instruction writer's JSON answers.

`json_grammar` is the JSON schema's grammar: any task label from the list and any strings
(the full profile, whose captions have no scene to check against). On Shapes each request's
grammar is built from its scene (`scene_grammar`): the answer is the requested task, an
instruction from `world.valid_edits` (it names only shapes the scene has, with their
colour and kind bound as in the scene, and values the edit can take) and, with
`bind_caption`, the output caption that instruction makes. The answer is written exactly as
the small model was trained to write it (`prompts.answer`: `json.dumps` spacing).

The instructions are laid out as a character trie whose equal subtrees share one rule, so
llama.cpp tracks a few grammar stacks per token instead of one per instruction (an add
request has ~1,900 instructions, which differ in region but share ~380 captions).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from ..world import Scene, valid_edits
from . import prompts

_END = ""  # trie key: a string ends here
FREE_STRING = '[^"\\\\\\x7F\\x00-\\x1F]*'  # a JSON string's characters without escapes (JSON-schema grammars allow more)


def json_grammar(tasks: tuple[str, ...]):
    """The JSON-schema grammar every answer is decoded under where there is no scene."""
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_json_schema(json.dumps(prompts.answer_schema(tasks)), verbose=False)


def literal(text: str) -> str:
    """A GBNF string literal (JSON's escaping is GBNF's for these characters)."""
    return json.dumps(text, ensure_ascii=True)


def choice_rules(endings: Mapping[str, str], prefix: str = "n") -> tuple[str, list[str]]:
    """GBNF for "one of these strings, then what follows it": `endings` maps each string to the
    expression that must follow it. Returns the root expression and its rules."""
    trie: dict = {}
    for text, tail in endings.items():
        node = trie
        for ch in text:
            node = node.setdefault(ch, {})
        node[_END] = tail
    names: dict[str, str] = {}
    rules: list[str] = []

    def expr(node: dict) -> str:
        alts = []
        for key in sorted(node):
            if key == _END:
                alts.append(node[key])
                continue
            text, child = key, node[key]
            while len(child) == 1 and _END not in child:
                ((ch, child),) = child.items()
                text += ch
            rest = child[_END] if len(child) == 1 else ref(child)
            alts.append(f"{literal(text)} {rest}")
        return alts[0] if len(alts) == 1 else "(" + " | ".join(alts) + ")"

    def ref(node: dict) -> str:
        body = expr(node)
        if body not in names:
            names[body] = f"{prefix}{len(names)}"
            rules.append(f"{names[body]} ::= {body}")
        return names[body]

    return expr(trie), rules


def scene_grammar_text(scene: Scene, task: str, concept: str | None = None, bind_caption: bool = True) -> str | None:
    """The GBNF of a request's valid answers on `scene`, or None when the task has no valid
    edit there. Reserved subjects and styles only for concept requests, as `check_answer`
    allows them."""
    edits = valid_edits(scene, task, allow_reserved=concept is not None, concept=concept)
    if not edits:
        return None
    before, rest = prompts.answer(task, "<I>", "<C>").split("<I>")
    between, after = rest.split("<C>")
    for e in edits:
        for text in (e.instruction, e.output_caption):
            if json.dumps(text)[1:-1] != text:
                raise ValueError(f"{text!r} needs JSON escaping, which the scene grammar does not write")
    rules, captions = [], {}
    if bind_caption:
        for e in edits:
            if e.output_caption not in captions:
                captions[e.output_caption] = f"c{len(captions)}"
                rules.append(f"{captions[e.output_caption]} ::= {literal(between + e.output_caption + after)}")
        endings = {e.instruction: captions[e.output_caption] for e in edits}
    else:
        rules.append(f"c0 ::= {literal(between)} {FREE_STRING} {literal(after)}")
        endings = {e.instruction: "c0" for e in edits}
    root, trie_rules = choice_rules(endings)
    return "\n".join([f"root ::= {literal(before)} {root}", *trie_rules, *rules]) + "\n"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
