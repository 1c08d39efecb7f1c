"""Every shell command of README.md, docs/*.md and recipes/README.md runs as written, in order, on a fresh database.

How the documents are read, for whoever edits them:

- A fenced block whose language is ``bash``, ``sh``, ``shell`` or ``console`` holds commands. Each command (a line,
  or lines joined by a trailing backslash; blank and ``#`` lines skipped) runs with bash from a temporary copy of
  the project's folder (links to its files) that has ``../shared`` beside it, with ``CONCORD_DATABASE_URL`` set to a
  fresh SQLite database. Documents run in this order, each from top to bottom: README.md, docs/*.md (by name),
  recipes/README.md; a later command may use what an earlier one made (campaigns, users, runs).
- A command fails the test when it exits non-zero or prints a Python traceback.
- ``<!-- not-run: REASON -->`` alone on a line before a block (blank lines between allowed) skips that block. The
  reason is required and says why (it starts a server, needs a GPU or the reader's own file, takes an hour); the
  prose the reader sees must say it too. Keep these few: everything else runs.
- A ``pip install`` line is not run: the test's environment is the one ``.ci/run`` installed. The test checks that
  the line asks for nothing more (the same pinned versions, a subset of the extras).
- A usage synopsis with placeholders (``FILE``, ``[--flag X]``) is not a command: fence it as ``text``.
- After the whole pass, every command that ran, except ``eval`` (which only recomputes), runs a second time: a
  taken name, an existing folder or run must be refused in one line, never with a traceback (any exit status).

The tour trains the two real models of ../shared/README.md for two steps each, which takes most of this test's
time; without ../shared it is skipped.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import SHARED

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "recipes" / "README.md"]
SHELLS = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```\s*([\w+-]*)")
NOT_RUN = re.compile(r"^<!--\s*not-run:(.*?)-->\s*$")
TRACEBACK = "Traceback (most recent call last)"
OUTPUTS = {".git", "concord-data", "runs", "exports", "plots", "quality.json", "test-output", ".pytest_cache"}
"""What the commands write, or what must not travel into the temporary copy of the project."""


class CommandFailed(AssertionError):
    """A documented command that exited non-zero or printed a traceback."""


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, from 1
    commands: list[str]
    not_run: str | None = None  # the marker's reason, when it has one
    where: str = field(init=False)

    def __post_init__(self) -> None:
        self.where = f"{self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path}:{self.line}"


def commands_of(lines: list[str]) -> list[str]:
    """Shell lines joined at trailing backslashes; blank lines and comments left out."""
    commands, current = [], ""
    for line in lines:
        current = f"{current} {line.strip()}" if current else line.strip()
        if current.endswith("\\"):
            current = current[:-1].rstrip()
            continue
        if current and not current.startswith("#"):
            commands.append(current)
        current = ""
    return commands


def shell_blocks(path: Path, text: str | None = None) -> list[Block]:
    """The shell blocks of a Markdown file, with the reason of a ``not-run`` marker before one."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks, marker, number = [], None, 0
    while number < len(lines):
        line = lines[number]
        if found := NOT_RUN.match(line.strip()):
            marker = found.group(1).strip()
        elif fence := FENCE.match(line):
            end = next(i for i in range(number + 1, len(lines)) if lines[i].startswith("```"))
            if fence.group(1) in SHELLS:
                blocks.append(Block(path, number + 1, commands_of(lines[number + 1 : end]), marker))
            marker, number = None, end
        elif line.strip():
            marker = None  # a marker belongs to the block right after it
        number += 1
    return blocks


def check_install(command: str, where: str) -> None:
    """A documented ``pip install`` asks only for what .ci/run installs: the same pins, a subset of the extras."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    ci_extras = set(re.search(r'-e "\.\[([\w,]+)\]"', ci).group(1).split(","))
    for token in command.split()[2:]:
        token = token.strip("'\"")
        if extras := re.fullmatch(r"\.\[([\w,]+)\]", token):
            missing = set(extras.group(1).split(",")) - ci_extras
            assert not missing, f"{where}: `{command}` installs extras .ci/run does not: {sorted(missing)}"
        elif "==" in token:
            assert token in ci, f"{where}: `{command}` pins {token}, which .ci/run does not install"


def run_command(command: str, *, cwd: Path, env: dict[str, str], where: str) -> subprocess.CompletedProcess:
    """Run one documented command; CommandFailed names it, its place and the end of its output."""
    start = time.monotonic()
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    log.info("%5.1f s  %s: %s", time.monotonic() - start, where, command)
    output = done.stdout + done.stderr
    if done.returncode != 0 or TRACEBACK in output:
        why = f"exit {done.returncode}" if done.returncode != 0 else "a traceback"
        raise CommandFailed(f"{where}: `{command}` failed ({why}):\n{output[-3000:]}")
    return done


def run_blocks(blocks: list[Block], *, cwd: Path, env: dict[str, str]) -> list[tuple[str, str]]:
    """Run every command of the blocks not marked ``not-run``, in order; returns (where, command) of those run."""
    ran = []
    for block in blocks:
        if block.not_run is not None:
            continue
        for command in block.commands:
            if command.startswith("pip install"):
                check_install(command, block.where)
                continue
            run_command(command, cwd=cwd, env=env, where=block.where)
            ran.append((block.where, command))
    return ran


@pytest.fixture
def project(tmp_path) -> tuple[Path, dict[str, str]]:
    """A folder that looks like the project (links to its files) and a fresh database; ../shared is linked beside
    it when there is one."""
    folder = tmp_path / "concord"
    folder.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in OUTPUTS:
            (folder / entry.name).symlink_to(entry)
    if SHARED.is_dir():
        (tmp_path / "shared").symlink_to(SHARED)
    env = os.environ | {"CONCORD_DATABASE_URL": f"sqlite:///{tmp_path / 'concord.db'}", "PYTHONUNBUFFERED": "1"}
    env.pop("CONCORD_DATA_DIR", None)
    return folder, env


def test_every_block_is_run_or_says_why_not():
    blocks = [block for path in DOCUMENTS for block in shell_blocks(path)]
    assert len(blocks) >= 8, [block.where for block in blocks]
    for block in blocks:
        assert block.commands, f"{block.where}: an empty shell block"
        assert block.not_run != "", f"{block.where}: a not-run marker must say why"
    skipped = [block.where for block in blocks if block.not_run is not None]
    # Seven: the set-up (a server, and CI itself), the team server, GPUs, the hour-long benchmark, a resume (needs a
    # checkpoint), PPO on the reader's campaign, response files of the reader's. A new one is a decision: say why.
    assert len(skipped) <= 7, f"more blocks skipped than the documented few: {skipped}"


def test_a_renamed_flag_fails_the_run(project):
    """The runner is no rubber stamp: the README's import block with one flag renamed fails, naming the command.
    (The block as written passes in the test below.)"""
    folder, env = project
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    broken = shell_blocks(ROOT / "README.md", readme.replace("--drop-identical", "--drop-identicals"))
    broken_imports = next(block for block in broken if "--drop-identicals" in block.commands[0])
    with pytest.raises(CommandFailed, match=r"--drop-identicals.*\(exit 2\)"):
        run_blocks([broken_imports], cwd=folder, env=env)


def test_a_marker_needs_a_reason_and_skips_only_its_block():
    text = "<!-- not-run: starts a server -->\n```bash\npython launch.py\n```\n\ntext\n```bash\nls \\\n  -la\n```\n"
    first, second = shell_blocks(ROOT / "README.md", text)
    assert first.not_run == "starts a server" and first.commands == ["python launch.py"]
    assert second.not_run is None and second.commands == ["ls -la"]
    unexplained = shell_blocks(ROOT / "README.md", "<!-- not-run: -->\n```bash\nls\n```\n")
    assert unexplained[0].not_run == ""
    with pytest.raises(AssertionError, match="pins gguf==9"):
        check_install("pip install gguf==9", "README.md:1")


def test_a_traceback_fails_even_with_exit_status_0(tmp_path):
    command = "python -c 'import traceback\ntry:\n    1 / 0\nexcept ZeroDivisionError:\n    traceback.print_exc()'"
    with pytest.raises(CommandFailed, match="a traceback"):
        run_command(command, cwd=tmp_path, env=dict(os.environ), where="here")


@pytest.mark.slow
@pytest.mark.timeout(1800)  # about 3 CPU-minutes of commands; a busy machine stretches them past the default 600 s
def test_readme_and_docs_commands_run_as_written_and_twice(project, shared_data):
    folder, env = project
    blocks = [block for path in DOCUMENTS for block in shell_blocks(path)]
    ran = run_blocks(blocks, cwd=folder, env=env)
    assert any("launch.py train" in command for _, command in ran)  # the tour reached training
    assert (folder / "runs" / "smollm2-hh" / "model" / "model.safetensors").is_file()
    for where, command in ran:
        if " eval " in command:
            continue
        again = subprocess.run(["bash", "-c", command], cwd=folder, env=env, capture_output=True, text=True)
        output = again.stdout + again.stderr
        assert TRACEBACK not in output, f"{where}: `{command}` run twice printed a traceback:\n{output[-3000:]}"
        if again.returncode != 0:  # a refusal is one clear line, the last on stderr
            last = again.stderr.strip().splitlines()[-1]
            assert re.match(r"[\w ]*(failed|error): \S", last), f"{where}: `{command}` twice: {again.stderr[-3000:]}"
