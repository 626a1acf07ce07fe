"""tests/forked_cli.py: a forked call of ``gensis`` answers as a fresh ``python -m gensis`` process does."""

import os
import subprocess
import sys
import time

import pytest

from tests import forked_cli


@pytest.fixture(autouse=True)
def forked_even_when_all_calls_run_fresh(monkeypatch):
    monkeypatch.delenv("GENSIS_TEST_FRESH_CLI", raising=False)   # these tests are of the forked calls


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


def test_a_quick_call_read_late_is_not_taken_for_a_timeout(monkeypatch):
    # both answers (pid, exit status) may wait in the pipe's buffer before the test process reads the first
    forked_cli.run_cli(["--help"])   # the session's zygote is up
    stdout = forked_cli._zygote.process.stdout
    readline = stdout.readline

    def late_readline():
        time.sleep(1)
        return readline()

    monkeypatch.setattr(stdout, "readline", late_readline)
    assert forked_cli.run_cli(["--help"], timeout=5).returncode == 0


def test_calls_that_would_start_differently_run_fresh(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    zygote = {**os.environ, "KMP_INIT_AT_FORK": "FALSE"}   # as an import in the zygote (sklearn) leaves it
    assert not forked_cli.starts_fresh(["stage1"], None) and not forked_cli.startup_differs(zygote)
    assert forked_cli.starts_fresh(["stage1"], {"PYTHONPATH": "hooks"})   # read at start-up
    assert forked_cli.starts_fresh(["tile", "slides=a"], None)   # its pool's start method: by imports
    monkeypatch.setenv("GENSIS_DEBUG", "1")   # read when the command runs
    assert not forked_cli.startup_differs(zygote)
    monkeypatch.setenv("KMP_INIT_AT_FORK", "FALSE")   # the same import in the test process
    assert not forked_cli.startup_differs(zygote)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")   # read when OpenMP loads
    assert forked_cli.startup_differs(zygote)


def test_plain_calls_go_through_the_zygote_after_imports_that_set_variables():
    import sklearn  # noqa: F401  (sets KMP_* in this process, as in the zygote: no reason to start afresh)

    assert forked_cli.run_cli(["--help"]).returncode == 0
    assert not forked_cli.starts_fresh(["stage1"], None)
    assert not forked_cli.startup_differs(forked_cli._zygote.environment)
