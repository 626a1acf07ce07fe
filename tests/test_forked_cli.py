"""tests/forked_cli.py: a forked call of ``gensis`` answers as a fresh ``python -m gensis`` process does."""

import subprocess
import sys

import pytest

from tests import forked_cli


def fresh(*args, cwd=None):
    return forked_cli.run_cli(list(args), cwd=cwd, fresh=True)


@pytest.mark.parametrize("args", [["--help"], ["stage1", "--help"], ["stage1", "no_such_key=1"],
                                  ["stage1", "data.path=/nonexistent/tiles", "experiment=tiny"], ["nope"]])
def test_a_forked_call_answers_as_a_fresh_process(args, tmp_path):
    forked = forked_cli.run_cli(args, cwd=tmp_path)
    plain = fresh(*args, cwd=tmp_path)
    assert (forked.returncode, forked.stdout, forked.stderr) == (plain.returncode, plain.stdout, plain.stderr)


@pytest.mark.parametrize("code", ["None", "0", "3", "256", "'a message'", "True"])
def test_exit_codes_are_those_of_the_interpreter(code, capsys):
    interpreter = subprocess.run([sys.executable, "-c", f"raise SystemExit({code})"], capture_output=True,
                                 text=True)
    assert forked_cli.exit_code(eval(code)) == interpreter.returncode
    assert capsys.readouterr().err == interpreter.stderr


def test_the_call_gets_the_callers_environment_and_working_directory(tmp_path, monkeypatch):
    # a relative path is resolved against the caller's working directory, and GENSIS_CONFIG_DIR is read when the
    # command runs: both must be the caller's at the time of the call, not the zygote's
    (tmp_path / "my_configs").mkdir()
    monkeypatch.setenv("GENSIS_CONFIG_DIR", "my_configs")
    forked = forked_cli.run_cli(["stage1", "experiment=tiny"], cwd=tmp_path)
    plain = fresh("stage1", "experiment=tiny", cwd=tmp_path)
    assert (forked.returncode, forked.stderr) == (plain.returncode, plain.stderr)
    assert forked.returncode != 0 and str(tmp_path / "my_configs") in forked.stderr   # found there: no stage1.yaml
    monkeypatch.setenv("GENSIS_CONFIG_DIR", "elsewhere")
    assert f"config folder {tmp_path / 'elsewhere'} not found" in forked_cli.run_cli(["stage1"], cwd=tmp_path).stderr


def test_a_call_past_its_timeout_is_killed_and_the_next_one_runs(tmp_path):
    with pytest.raises(subprocess.TimeoutExpired):
        forked_cli.run_cli(["demo", f"out={tmp_path / 'demo'}", "experiment=tiny"], timeout=1)
    assert forked_cli.run_cli(["--help"]).returncode == 0
