"""README's "Run the loop on your machine", played as printed: the commands of its shell blocks,
top to bottom, in a fresh home, up to the first block that asks for a prediction.

Only the home (`~/.dropflow`, and DROPFLOW_HOME for the commands that take the default) and
the port (8080) are replaced, so an edit of README that breaks a command breaks this test.
The commands run in a scratch folder (they write `iris.csv` where they run) holding a `.venv`
link to this interpreter's environment, as `.venv/bin/...` finds it in a checkout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.local_up import JOB_SECONDS, START_SECONDS, LocalUp
from tests.net import free_port, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Run the loop on your machine"
README_HOME = "~/.dropflow"
README_PORT = "8080"


def section_blocks(text: str, heading: str = SECTION) -> list[list[str]]:
    """The commands of each ```bash block under `heading` (until the next `## ` heading), a
    command continued with a trailing backslash joined into one."""
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else len(text)]
    blocks = []
    for body in re.findall(r"^```bash\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL):
        commands = []
        for line in re.sub(r"\\\n", " ", body).splitlines():
            if line.strip():
                commands.append(line)
        blocks.append(commands)
    return blocks


def played_blocks() -> list[list[str]]:
    """The blocks a reader plays before having a prediction: up to the first that posts to
    /predict."""
    blocks = section_blocks(README.read_text())
    ends = [i for i, block in enumerate(blocks) if any("/predict" in c for c in block)]
    assert ends, f"no block of README's {SECTION!r} asks for a prediction: {blocks}"
    return blocks[: ends[0] + 1]


def test_the_sections_commands_are_found():
    blocks = played_blocks()
    commands = [c for block in blocks for c in block]

    assert any(" local up" in c for c in commands), commands
    assert any("dropflow sample iris > iris.csv" in c for c in commands), commands
    assert any(c.startswith("cp iris.csv ") for c in commands), commands
    assert any(c.startswith("curl ") for c in commands), commands


def test_readmes_local_section_runs_as_written(tmp_path):
    home, work, port = tmp_path / "home", tmp_path / "work", str(free_port())
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    env = {**os.environ, "DROPFLOW_HOME": str(home)}

    def as_here(command: str) -> str:
        return command.replace(README_HOME, str(home)).replace(README_PORT, port)

    runtime: LocalUp | None = None
    answers: list[str] = []
    try:
        for block in played_blocks():
            if any("/predict" in command for command in block):
                # A reader asks once the model is served: wait on that state, not on a clock.
                assert runtime is not None, "README asks for a prediction before `local up`"
                wait_until(
                    lambda up=runtime: up.champion("iris"),
                    JOB_SECONDS,
                    interval=1.0,
                    what=lambda up=runtime: f"iris to be served; {up.output}",
                )
            for command in map(as_here, block):
                if " local up" in command:
                    # exec: Ctrl-C (SIGINT) reaches dropflow itself, not bash
                    bash = ["bash", "-c", f"exec {command}"]
                    runtime = LocalUp(home, command=bash, cwd=work, env=env)
                    assert runtime.url == f"http://127.0.0.1:{port}", runtime.output
                    continue
                done = subprocess.run(
                    ["bash", "-c", command],
                    cwd=work,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=START_SECONDS,
                    check=False,
                )
                assert done.returncode == 0, (command, done.stdout, done.stderr)
                answers.append(done.stdout)

        # The runtime said where to drop files, and the drop landed there
        assert runtime is not None, "no block starts `local up`"
        drop_line = f"drop CSV/Parquet files into {home / 'bucket' / 'datasets'}/<model>/"
        assert drop_line in runtime.output
        assert (home / "bucket" / "datasets" / "iris" / "iris.csv").read_bytes() == (
            work / "iris.csv"
        ).read_bytes()

        # The last command (the prediction) answered with the species of README's flower
        body = json.loads(answers[-1])
        assert body["model"] == "iris", body
        assert body["version"] == runtime.champion("iris")
        assert body["predictions"] == ["setosa"], body
        assert len(body["probabilities"][0]) == 3
        assert runtime.stop() == 0, runtime.output
    finally:
        if runtime is not None:
            runtime.stop()
