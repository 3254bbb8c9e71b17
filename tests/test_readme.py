"""The README's Python examples run, and its CLI summary matches the real commands."""

from __future__ import annotations

import re

import torch
from click.testing import CliRunner

from conftest import REPO
from fastdipole.cli import main

README = (REPO / "README.md").read_text()


def test_readme_opens_with_the_two_setup_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    out = namespace["out"]
    assert out.dipole.shape == (1, 3) and out.charges.shape == (3,)
    energy_model = namespace["MyEnergyModel"]()
    Z, R, off = namespace["Z"], namespace["R"].clone().requires_grad_(), namespace["offsets"]
    energy = energy_model(Z, R, off)
    (force,) = torch.autograd.grad(energy.sum(), R)
    assert energy.shape == (1,) and torch.isfinite(force).all()


def test_cli_summary_lists_real_commands_and_options():
    runner = CliRunner()
    section = README.split("## Command line")[1].split("## Dataset")[0]
    usage = re.search(r"```\n(.*?)```", section, re.S).group(1)
    helps = ""
    for line in usage.strip().splitlines():
        words = line.split()[1:3]
        args = words if words[0] in ("data", "baseline") else words[:1]
        result = runner.invoke(main, [*args, "--help"])
        assert result.exit_code == 0, (line, result.output)
        helps += result.output
    for option in re.findall(r"(--[a-z][a-z0-9-]+)", section):
        assert option in helps, option


def test_the_predict_example_prints_what_the_readme_shows():
    import shlex

    import pytest

    pytest.importorskip("rdkit")
    block = re.search(r"```console\n\$ (fastdipole predict [^\n]*)\n(.*?)```", README, re.S)
    args = shlex.split(block.group(1))[1:]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    want = [line.split() for line in block.group(2).strip().splitlines()[2:]]
    got = [line.split() for line in result.output.strip().splitlines()[2:]]
    assert [row[:3] for row in got] == [row[:3] for row in want]
    for g, w in zip(got, want):
        assert abs(float(g[3]) - float(w[3])) < 2e-3 and abs(float(g[4]) - float(w[4])) < 5e-4, (g, w)
