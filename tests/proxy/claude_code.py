"""The real Claude Code CLI as a test client (shared by tests/proxy and tests/e2e).

Claude Code is installed once per machine by hack/install-claude-code.sh (pinned, from npm) and
runs offline: its only network peer is the gateway at `base_url`.
"""

from __future__ import annotations

import asyncio
import os
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


async def run_claude(claude: Path, base_url: str, key: str, workdir: Path, prompt: str = PROMPT
                     ) -> tuple[int | None, str, str]:
    """One `claude -p` turn; returns (exit code, stdout, stderr)."""
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        str(claude), "-p", prompt, cwd=workdir, env=claude_environment(base_url, key, home),
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
