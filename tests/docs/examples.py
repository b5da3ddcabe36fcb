"""The example commands of the docs, extracted from the markdown and turned into shell sessions.

What counts as an example: every fenced block whose language is `sh`, `bash` or `shell` in
README.md, docs/*.md and examples/**/README.md. Other blocks (YAML, JSON, Python, diagrams and
sample output) are not commands. A comment on the line right above a block says how it runs:

- none: the block is a session of its own (standalone: no cluster).
- `<!-- example: cluster -->`: the cluster blocks of all documents run as one session, in
  document order (README, docs/operator.md, docs/proxy.md, the others), against the suite's API
  server, as a user following the docs in one terminal would: variables carry over.
- `<!-- example: skip "COMMAND": REASON -->`: the block's commands that start with COMMAND are not
  run, for the REASON given (keep these rare).

Long-running commands (`spendgate proxy`, `spendgate operator`, `make run`, the mock upstream) run
in the background, as in a second terminal: the next command runs once they answer, and they are
stopped with SIGTERM when their session ends; they must stop cleanly.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cluster.controlplane import REPO_ROOT

SHELLS = frozenset({"sh", "bash", "shell"})
MARKER = re.compile(r"<!--\s*example:\s*(?P<what>.*?)\s*-->")
SKIP = re.compile(r'skip\s+"(?P<command>[^"]+)":\s*(?P<reason>\S.*)')
CLUSTER = "cluster"
# The order a reader follows: the README, then the operator (the cluster examples start it), then the rest.
FIRST = ("README.md", "docs/operator.md", "docs/proxy.md")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Block:
    document: str  # relative to the repository
    line: int  # of the opening fence
    code: str
    marker: str | None

    @property
    def name(self) -> str:
        return f"{self.document}:{self.line}"

    @property
    def cluster(self) -> bool:
        return self.marker == CLUSTER

    @property
    def skips(self) -> dict[str, str]:
        """Command prefix -> the reason it is not run."""
        found = SKIP.fullmatch(self.marker or "")
        return {found["command"]: found["reason"]} if found else {}


def documents() -> list[Path]:
    paths = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md")),
             *sorted((REPO_ROOT / "examples").glob("**/README.md"))]
    rank = {name: number for number, name in enumerate(FIRST)}
    return sorted(paths, key=lambda path: (rank.get(str(path.relative_to(REPO_ROOT)), len(rank)),
                                           str(path.relative_to(REPO_ROOT))))


def blocks(path: Path) -> Iterator[Block]:
    lines = path.read_text().splitlines()
    fence: tuple[int, str, str | None] | None = None  # opening line, language, marker
    body: list[str] = []
    for number, line in enumerate(lines, start=1):
        if fence is None and line.startswith("```"):
            above = next((lines[i] for i in range(number - 2, -1, -1) if lines[i].strip()), "")
            marker = MARKER.fullmatch(above.strip())
            fence, body = (number, line[3:].strip(), marker["what"] if marker else None), []
        elif fence is not None and line.startswith("```"):
            opened, language, marker = fence
            if language in SHELLS:
                yield Block(str(path.relative_to(REPO_ROOT)), opened, "\n".join(body) + "\n", marker)
            fence = None
        elif fence is not None:
            body.append(line)


def all_blocks() -> list[Block]:
    return [block for path in documents() for block in blocks(path)]


def commands(code: str) -> list[str]:
    """Logical command lines: continuations joined, blank and comment-only lines left out."""
    joined, pending = [], ""
    for line in code.splitlines():
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        text = (pending + line).strip()
        pending = ""
        if text and not text.startswith("#"):
            joined.append(text)
    return joined


# servers ---------------------------------------------------------------------------------------

SERVERS = {  # the command (after any VAR=value) -> how to tell it answers
    ("spendgate", "proxy"): ("--admin-port", 8788, "/readyz", ""),
    ("spendgate", "operator"): ("--metrics-port", 8080, "/metrics", "spendgate_operator_synced 1.0"),
    ("make", "run"): ("ADMIN_PORT", 8788, "/readyz", ""),  # hack/quickstart.sh reads ADMIN_PORT
    ("python", "-m", "spendgate.testing.upstream"): ("--port", 18080, "/", None),  # any answer will do
}


@dataclass(frozen=True)
class Server:
    tokens: list[str]  # the command with its VAR=value prefix, comments dropped
    url: str
    expect: str | None  # text the answer must contain; "" = any 2xx; None = any HTTP answer
    lenient: bool = False  # make: its own exit status on SIGTERM is "Terminated"; its children must exit cleanly


def server(line: str, ports: dict[int, int]) -> Server | None:
    """The long-running command on this line (ports already substituted), or None."""
    tokens = shlex.split(line, comments=True)
    command = [token for token in tokens if not ENV_ASSIGNMENT.match(token)]
    for prefix, (flag, default, path, expect) in SERVERS.items():
        if tuple(command[:len(prefix)]) == prefix:
            port = _flag_value(command, flag) or ports.get(default, default)
            return Server(tokens, f"http://127.0.0.1:{port}{path}", expect, lenient=prefix[0] == "make")
    return None


def _flag_value(tokens: list[str], flag: str) -> int | None:
    for number, token in enumerate(tokens):
        if token == flag and number + 1 < len(tokens):
            return int(tokens[number + 1])
        if token.startswith(f"{flag}="):
            return int(token.split("=", 1)[1])
    return None


# sessions --------------------------------------------------------------------------------------

PROLOGUE = r'''
set -euo pipefail
__servers=()
__lenient=()
__stop_all() {  # every server of the session, SIGTERM to its process group; each must exit cleanly
  local status=0 failed=0 i
  for i in "${!__servers[@]}"; do
    kill -TERM -- "-${__servers[$i]}" 2>/dev/null || true
    wait "${__servers[$i]}" || status=$?
    for _ in $(seq 100); do kill -0 -- "-${__servers[$i]}" 2>/dev/null || break; sleep 0.1; done
    if kill -0 -- "-${__servers[$i]}" 2>/dev/null; then
      echo "EXAMPLE SERVER $i left processes behind after SIGTERM" >&2; kill -KILL -- "-${__servers[$i]}"; failed=1
    fi
    if [ "$status" -ne 0 ] && [ "${__lenient[$i]}" = 0 ]; then
      echo "EXAMPLE SERVER $i exited with $status after SIGTERM" >&2; failed=1
    fi
    status=0
  done
  return $failed
}
__finish() { local code=$?; __stop_all || code=1; exit $code; }
trap __finish EXIT
__ready() {  # URL EXPECT PID LOG: until the server answers (EXPECT: text, "" any 2xx, "-" any answer)
  for _ in $(seq 600); do
    if ! kill -0 "$3" 2>/dev/null; then echo "EXAMPLE SERVER exited before it answered:" >&2; cat "$4" >&2; exit 1; fi
    if [ "$2" = "-" ]; then curl -s -o /dev/null "$1" && return 0
    elif [ -z "$2" ]; then curl -sf -o /dev/null "$1" && return 0
    else curl -sf "$1" 2>/dev/null | grep -qF "$2" && return 0; fi
    sleep 0.1
  done
  echo "EXAMPLE SERVER never answered at $1:" >&2; cat "$4" >&2; exit 1
}
set -x
'''


@dataclass
class Session:
    """Blocks turned into one bash script: servers backgrounded, skips and substitutions applied."""

    ports: dict[int, int]  # documented port -> the free port used instead
    upstream: str  # what https://api.anthropic.com becomes (no internet here)
    logs: Path
    lines: list[str] = field(default_factory=list)
    servers: list[Path] = field(default_factory=list)  # their logs

    def add(self, block: Block) -> None:
        self.lines.append(f": '--- {block.name}'")
        for line in commands(self._substituted(block.code)):
            skipped = next((reason for prefix, reason in block.skips.items() if line.startswith(prefix)), None)
            if skipped is not None:
                self.lines.append(f": {shlex.quote(f'not run ({skipped}): {line}')}")
                continue
            found = server(line, self.ports)
            self.lines.append(line if found is None else self._background(found))

    def script(self) -> str:
        return PROLOGUE + "\n".join(self.lines) + "\n"

    def _substituted(self, code: str) -> str:
        code = code.replace("https://api.anthropic.com", self.upstream)
        return re.sub(r"\b(\d{4,5})\b", lambda m: str(self.ports.get(int(m[1]), m[1])), code)

    def _background(self, found: Server) -> str:
        log = self.logs / f"server-{len(self.servers)}.log"
        self.servers.append(log)
        env = [token for token in found.tokens if ENV_ASSIGNMENT.match(token)]
        command = found.tokens[len(env):]
        expect = "-" if found.expect is None else found.expect
        start = shlex.join([*env, "setsid", *command]) if env else shlex.join(["setsid", *command])
        return (f"{start} > {shlex.quote(str(log))} 2>&1 &\n"
                f"__servers+=($!); __lenient+=({int(found.lenient)})\n"
                f"__ready {shlex.quote(found.url)} {shlex.quote(expect)} $! {shlex.quote(str(log))}")
