"""The real Claude Code CLI as a test client (shared by tests/proxy and tests/e2e).

Claude Code is installed once per machine by hack/install-claude-code.sh (pinned, from npm) and
runs offline: its only network peer is the gateway at `base_url`.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shlex
import subprocess
from pathlib import Path

INSTALLER = Path(__file__).parents[2] / "hack" / "install-claude-code.sh"
PROMPT = "Run the tests and tell me if they pass."


def install_claude() -> Path:
    """The `claude` executable (installed on first use; minutes, once per machine)."""
    installed = subprocess.run([str(INSTALLER)], check=True, capture_output=True, text=True, timeout=600)
    return Path(installed.stdout.strip())


def claude_environment(base_url: str, key: str, home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"], "HOME": str(home), "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": key, "DISABLE_TELEMETRY": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "ANTHROPIC_CUSTOM_HEADERS": "x-spendgate-repo: org/payments\nx-spendgate-branch: main",
    }


async def run_claude(claude: Path, base_url: str, key: str, workdir: Path, prompt: str = PROMPT,
                     **environment: str) -> tuple[int | None, str, str]:
    """One `claude -p` turn; returns (exit code, stdout, stderr). `environment` adds to Claude Code's."""
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        str(claude), "-p", prompt, cwd=workdir, env={**claude_environment(base_url, key, home), **environment},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    finally:
        if process.returncode is None:  # timed out: leave nothing running
            process.kill()
            await process.wait()
    return process.returncode, stdout.decode(), stderr.decode()


def run_claude_sync(claude: Path, base_url: str, key: str, workdir: Path, prompt: str = PROMPT
                    ) -> tuple[int | None, str, str]:
    return asyncio.run(run_claude(claude, base_url, key, workdir, prompt))


class Terminal:
    """Claude Code interactive, in a tmux server of its own (its own socket, so closing it ends only
    what it started). The CLI's first-run screens are answered in its config: onboarding done, the
    project trusted, the API key (if any) approved."""

    def __init__(self, claude: Path, environment: dict[str, str], workdir: Path, width: int = 160,
                 height: int = 45) -> None:
        self.socket = f"spendgate-{secrets.token_hex(6)}"
        self._claude, self._environment, self._workdir = claude, environment, workdir
        self._size = (str(width), str(height))

    def __enter__(self) -> Terminal:
        home = Path(self._environment["HOME"])
        home.mkdir(parents=True, exist_ok=True)
        approved = [key[-20:] for key in (self._environment.get("ANTHROPIC_API_KEY"),) if key]
        (home / ".claude.json").write_text(json.dumps({
            "hasCompletedOnboarding": True, "numStartups": 5,
            "customApiKeyResponses": {"approved": approved, "rejected": []},
            "projects": {str(self._workdir): {"hasTrustDialogAccepted": True, "allowedTools": []}}}))
        command = shlex.join(["env", "-i", *(f"{name}={value}" for name, value in self._environment.items()),
                              str(self._claude)])
        self._tmux("new-session", "-d", "-s", "claude", "-x", self._size[0], "-y", self._size[1],
                   "-c", str(self._workdir), command)
        return self

    def __exit__(self, *_: object) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, check=False)

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-t", "claude", "-l", text)
        self._tmux("send-keys", "-t", "claude", "Enter")

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "claude")

    async def wait_for(self, text: str, timeout: float = 60) -> str:
        """The screen once it shows `text`; AssertionError with the last screen if it never does."""
        screen = ""
        for _ in range(int(timeout / 0.25)):
            screen = self.screen()
            if text in screen:
                return screen
            await asyncio.sleep(0.25)
        raise AssertionError(f"{text!r} never appeared; the screen:\n{screen}")
