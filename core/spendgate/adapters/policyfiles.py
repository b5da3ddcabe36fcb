"""Policy manifests and the keys file from disk, compiled into a bundle (standalone mode, the CLI).

Every file below the policy directory with a .yaml, .yml or .json suffix is a manifest. Whatever a
file does wrong (not a file, unreadable, vanished, larger than MAX_MANIFEST_BYTES, not UTF-8, not
YAML, too deeply nested) becomes one PolicyError naming the file and the problem; the other files
still load, and nothing raises.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from spendgate.adapters.files import MIB, UnreadableFile, read_text_bounded
from spendgate.adapters.keysfile import read_keys_file
from spendgate.policy.compiler import CompileResult, compile_policies
from spendgate.policy.manifests import Loaded, file_error, load_text

SUFFIXES: Final = (".yaml", ".yml", ".json")
# A Kubernetes object is at most 1.5 MiB (etcd's limit); a file may hold a List of several.
MAX_MANIFEST_BYTES: Final = 4 * MIB


def manifest_paths(directory: Path) -> list[Path]:
    """The manifests below `directory` in a stable order (what is listed, not yet read)."""
    return sorted(path for path in directory.rglob("*") if path.suffix in SUFFIXES and not path.is_dir())


def load_directory(directory: Path) -> Loaded:
    """Every manifest below `directory`; a file that cannot be read is an error, not an exception."""
    if not directory.is_dir():
        problem = "is a file, not a directory of policies" if directory.exists() else "does not exist"
        return Loaded(errors=[file_error(str(directory), "NotADirectory", f"policy directory {problem}")])
    loaded = Loaded()
    try:
        paths = manifest_paths(directory)
    except OSError as error:  # the directory changed under the walk
        return Loaded(errors=[file_error(str(directory), "Unreadable", f"cannot be listed: {error}")])
    for path in paths:
        try:
            text = read_text_bounded(path, MAX_MANIFEST_BYTES)
        except UnreadableFile as error:
            loaded.errors.append(file_error(str(path), "Unreadable", error.problem))
            continue
        loaded.extend(load_text(text, source=str(path)))
    return loaded


def compile_directory(policies: Path, keys_file: Path | None = None) -> CompileResult:
    """Standalone mode and the CLI: a directory of manifests (+ a keys file) -> bundle and errors.

    The keys file's own errors raise KeysFileError (a bundle without its keys would lock
    everybody out or let revoked keys back in, so it is never compiled without them)."""
    loaded = load_directory(policies)
    keys = read_keys_file(keys_file).keys if keys_file else []
    result = compile_policies(loaded.objects, keys)
    return CompileResult(bundle=result.bundle, errors=sorted([*loaded.errors, *result.errors]))
