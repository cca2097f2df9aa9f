"""The README's commands and embedding example are what CI and users run."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_ci_runs_the_readme_test_command():
    test_command = next(block.strip() for block in code_blocks("bash") if "pytest" in block)
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_embedding_example_runs_as_written(tmp_path):
    example = code_blocks("python")[0]
    result = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.split()[1:3] == ["1-nn", "600"] for line in lines if len(line.split()) > 2)
    assert any("1-nn" in line for line in lines[lines.index(next(l for l in lines if "difference" in l)):])


def test_every_method_is_documented_in_the_readme():
    from tcs_fewshot.methods.registry import all_method_names

    documented = set(re.findall(r"^\| `([a-z0-9-]+)` \|", README, flags=re.M))
    assert set(all_method_names()) <= documented, set(all_method_names()) - documented
