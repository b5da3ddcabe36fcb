"""Policy sets to compare: a directory, or a path at a Git revision (`main:policies`), read with the real
`git` so a pull-request check compares exactly what was committed.

Each side is loaded and compiled like `spendgate validate` does (same loader, same compiler), and
keeps where each object came from, so every error reads `file:line: what is wrong` (for a Git
revision, `REV:path:line`). A `keys.json` at the top of the policy directory is the standalone
keys file (hashes only); diff reports key changes as counts.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydantic import ValidationError

from spendgate.adapters.keysfile import KeysFile
from spendgate.adapters.policyfiles import load_directory
from spendgate.policy.bundle import KeyEntry
from spendgate.policy.compiler import CompileResult, compile_policies
from spendgate.policy.manifests import Loaded, load_text

MANIFEST_SUFFIXES: Final = (".yaml", ".yml", ".json")
KEYS_FILE: Final = "keys.json"


class PolicySourceError(Exception):
    """A policy source that cannot be read at all (no such directory, revision or path)."""


@dataclass(frozen=True)
class PolicySet:
    label: str  # as the user named it: examples/policies, main:policies
    loaded: Loaded
    result: CompileResult

    @property
    def problems(self) -> list[str]:
        """Every loading and compiling error, as `file:line: error` where the file is known."""
        lines = []
        for error in sorted([*self.loaded.errors, *self.result.errors]):
            where = self.loaded.where(error)
            lines.append(f"{where}: {error}" if where else str(error))  # parse errors carry file:line
        return lines


def open_policies(spec: str, repo: Path | None = None) -> PolicySet:
    """`spec` is a directory, or `REV:PATH` (or just `REV` with `repo`) in the Git repository `repo` (default .)."""
    if repo is None and Path(spec).is_dir():
        return _from_directory(Path(spec))
    revision, _, path = spec.partition(":")
    if repo is None and not path:
        raise PolicySourceError(f"{spec}: neither a directory nor REV:PATH (a Git revision and a path in it)")
    return _from_git(repo or Path("."), revision, path.strip("/") or ".", spec)


def _from_directory(directory: Path) -> PolicySet:
    loaded = load_directory(directory)
    keys_text = (directory / KEYS_FILE).read_text() if (directory / KEYS_FILE).is_file() else None
    return _compiled(str(directory), loaded, _keys(keys_text, str(directory / KEYS_FILE)))


def _from_git(repo: Path, revision: str, path: str, label: str) -> PolicySet:
    commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}",
                  failure=f"{label}: {revision!r} is not a revision of the Git repository {repo}").strip()
    listed = _git(repo, "ls-tree", "-r", "-z", "--name-only", commit, "--", path,
                  failure=f"{label}: cannot list {path} at {revision}")
    names = sorted(name for name in listed.split("\0") if name.endswith(MANIFEST_SUFFIXES))
    if not names:
        raise PolicySourceError(f"{label}: no policy manifests under {path!r} at {revision}")
    loaded = Loaded()
    keys_text = None
    keys_name = f"{path}/{KEYS_FILE}" if path != "." else KEYS_FILE
    for name in names:
        text = _git(repo, "show", f"{commit}:{name}", failure=f"{label}: cannot read {name} at {revision}")
        if name == keys_name:
            keys_text = text
        loaded.extend(load_text(text, source=f"{revision}:{name}"))
    return _compiled(label, loaded, _keys(keys_text, f"{revision}:{keys_name}"))


def _keys(text: str | None, source: str) -> list[KeyEntry]:
    if text is None:
        return []
    try:
        return KeysFile.model_validate_json(text).keys
    except ValidationError as error:
        first = error.errors()[0]
        raise PolicySourceError(f"{source}: not a valid keys file: {first['msg']} at "
                                f"{'.'.join(map(str, first['loc']))}") from error


def _compiled(label: str, loaded: Loaded, keys: list[KeyEntry]) -> PolicySet:
    return PolicySet(label=label, loaded=loaded, result=compile_policies(loaded.objects, keys))


def _git(repo: Path, *arguments: str, failure: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(repo), *arguments], capture_output=True, text=True, check=False)
    except OSError as error:  # no git on PATH
        raise PolicySourceError(f"{failure}: cannot run git: {error}") from error
    if done.returncode != 0:
        detail = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"git exited {done.returncode}"
        raise PolicySourceError(f"{failure} ({detail})")
    return done.stdout
