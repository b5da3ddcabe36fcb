"""Deterministic request bodies for the benchmark: a 2 KB turn and a ~400 KB Claude Code turn.

The large body looks like what Claude Code sends late in a session: two system blocks (the
attribution block and a long prompt with a cache breakpoint), 12 tools with JSON schemas, a long
history of tool_use / tool_result turns with file contents (about 100K tokens at ~4 bytes per
token), `model: claude-opus-5-5`, `max_tokens: 128000` and `metadata.user_id` as a JSON string.
The same seed always gives the same bytes.

    python bench/bodies.py            # prints the sizes
"""

from __future__ import annotations

import json
import random
from typing import Any

MODEL = "claude-opus-5-5"
SMALL_TARGET_BYTES = 2 * 1024
LARGE_TARGET_BYTES = 400 * 1024
SESSION_ID = "54c1eb09-7f0e-4c2a-9a51-3d2f5b8e6a10"
USER_ID = json.dumps({"device_id": "5dd07c33" + "a1" * 28, "account_uuid": "", "session_id": SESSION_ID})
WORDS = ["the", "budget", "proxy", "ledger", "window", "request", "usage", "token", "cache", "price", "model",
         "stream", "event", "delta", "cost", "center", "developer", "policy", "bundle", "compile", "route",
         "cascade", "alert", "pause", "downgrade", "spend", "report", "metric", "latency", "header", "body",
         "client", "upstream", "gateway", "virtual", "key", "hash", "session"]
TOOL_NAMES = ("Bash", "Read", "Edit", "Write", "Glob", "Grep", "Task", "TodoWrite", "WebFetch", "WebSearch",
              "NotebookEdit", "MultiEdit")


def dumps(body: dict[str, Any]) -> bytes:
    """Compact JSON, as Claude Code (JSON.stringify) sends it."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def _code(rng: random.Random, lines: int) -> str:
    out = []
    for number in range(1, lines + 1):
        indent = "    " * rng.randint(0, 3)
        name = "_".join(rng.choice(WORDS) for _ in range(2))
        out.append(f"{number:>6}\t{indent}{name} = compute({rng.choice(WORDS)!r}, {rng.randint(0, 9999)})")
    return "\n".join(out)


def _tool(rng: random.Random, name: str) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for index in range(rng.randint(2, 5)):
        field = f"{rng.choice(WORDS)}_{index}"
        properties[field] = {"type": rng.choice(["string", "integer", "boolean"]),
                             "description": _sentence(rng, 12)}
    return {
        "name": name,
        "description": " ".join(_sentence(rng, 14) for _ in range(12)),
        "input_schema": {"type": "object", "properties": properties, "required": sorted(properties)[:1],
                         "additionalProperties": False, "$schema": "http://json-schema.org/draft-07/schema#"},
    }


def _system(rng: random.Random, paragraphs: int) -> list[dict[str, Any]]:
    prompt = "\n\n".join(" ".join(_sentence(rng, 16) for _ in range(6)) for _ in range(paragraphs))
    return [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.300.a1b; cc_entrypoint=cli;"},
        {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.\n\n" + prompt,
         "cache_control": {"type": "ephemeral"}},
    ]


def _turn(rng: random.Random, number: int) -> list[dict[str, Any]]:
    """One assistant tool call and the user's tool result holding a file's contents."""
    tool_id = f"toolu_{number:04d}{rng.randrange(16**20):020x}"
    path = f"/work/repo/src/{rng.choice(WORDS)}/{rng.choice(WORDS)}_{number}.py"
    assistant = {"role": "assistant", "content": [
        {"type": "text", "text": _sentence(rng, 20)},
        {"type": "tool_use", "id": tool_id, "name": "Read", "input": {"file_path": path}},
    ]}
    user = {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": tool_id, "content": _code(rng, rng.randint(40, 90))},
    ]}
    return [assistant, user]


def _body(system: list[dict[str, Any]], messages: list[dict[str, Any]], tools: list[dict[str, Any]],
          max_tokens: int, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": messages, "system": system}
    if tools:
        body["tools"] = tools
    body.update({"metadata": {"user_id": USER_ID}, "max_tokens": max_tokens, "stream": stream})
    return body


def small_body(stream: bool = False) -> bytes:
    """About 2 KB: a short system prompt and one user message."""
    rng = random.Random(2)
    text = ""
    while True:
        messages = [{"role": "user", "content": [{"type": "text", "text": text or "Hi."}]}]
        body = dumps(_body(_system(rng, 1)[:1], messages, [], 1024, stream))
        if len(body) >= SMALL_TARGET_BYTES - 60:
            return body
        text += _sentence(rng, 8) + " "


def large_body(stream: bool = False) -> bytes:
    """About 400 KB: a Claude Code turn with 12 tools and a ~100K-token history."""
    rng = random.Random(400)
    system = _system(rng, 12)
    tools = [_tool(rng, name) for name in TOOL_NAMES]
    messages: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": _sentence(rng, 30)}]}]
    size = len(dumps(_body(system, messages, tools, 128000, stream)))
    number = 0
    while size < LARGE_TARGET_BYTES - 6 * 1024:
        turn = _turn(rng, number)
        messages.extend(turn)
        size += len(dumps({"t": turn}))
        number += 1
    last = messages[-1]["content"][-1]
    last["cache_control"] = {"type": "ephemeral"}
    messages.append({"role": "assistant", "content": [{"type": "text", "text": _sentence(rng, 25)}]})
    messages.append({"role": "user", "content": [{"type": "text", "text": "Now run the tests and fix what fails."}]})
    return dumps(_body(system, messages, tools, 128000, stream))


def main() -> None:
    for name, body in (("small", small_body()), ("large", large_body()), ("large stream", large_body(True))):
        parsed = json.loads(body)
        print(f"{name}: {len(body):,} bytes, {len(parsed['messages'])} messages, {len(parsed.get('tools', []))} tools")


if __name__ == "__main__":
    main()
