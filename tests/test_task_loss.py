"""benchmarks/task_loss.py: the disentanglement task's late loss and its chance level."""

import csv
import math

import pytest
import yaml

from tests.conftest import load_benchmark


def write_metrics(path, values):
    """A metrics.csv as stage 3 writes it: step rows with the task's loss, and per-epoch rows without it."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["epoch", "step", "train/disentangle", "teacher_entropy"])
        writer.writeheader()
        for step, value in enumerate(values):
            writer.writerow({"epoch": 0, "step": step, "train/disentangle": value})
            if step % 10 == 9:
                writer.writerow({"epoch": 0, "step": step, "train/disentangle": "", "teacher_entropy": 1.0})


def test_late_mean_averages_the_last_share_of_the_steps_only(tmp_path):
    task_loss = load_benchmark("task_loss")
    path = tmp_path / "metrics.csv"
    write_metrics(path, [100.0] * 50 + list(range(50)))   # steps 0-99; the second half holds 0..49
    assert task_loss.late_mean(path) == pytest.approx(24.5)
    assert task_loss.late_mean(path, late=1.0) == pytest.approx((100 * 50 + 49 * 50 / 2) / 100)


def test_a_run_without_the_task_is_named_in_one_line(tmp_path):
    task_loss = load_benchmark("task_loss")
    path = tmp_path / "metrics.csv"
    write_metrics(path, [""] * 5)
    with pytest.raises(SystemExit, match="no train/disentangle"):
        task_loss.late_mean(path)
    with pytest.raises(SystemExit, match="in \\(0, 1\\]"):
        task_loss.late_mean(path, late=0.0)


@pytest.mark.parametrize("method, devices, expected", [("simclr", "1", math.log(32)), ("simclr", 2, None),
                                                       ("dino", "1", None)])
def test_chance_is_ln_b_for_simclr_on_one_process(tmp_path, method, devices, expected):
    config = {"ssl": {"method": method}, "data": {"batch_size": 32}, "trainer": {"devices": devices}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert load_benchmark("task_loss").chance(tmp_path) == (pytest.approx(expected) if expected else None)


def test_only_finished_runs_are_read(tmp_path):
    for seed in (1, 2, 3):
        (tmp_path / f"seed{seed}").mkdir()
        write_metrics(tmp_path / f"seed{seed}" / "metrics.csv", [1.0])
    (tmp_path / "seed1.done.json").write_text("{}")
    (tmp_path / "seed3.done.json").write_text("{}")   # seed 2 still training: its metrics are partial
    assert load_benchmark("task_loss").finished_runs(tmp_path, [1, 2, 3, 4]) == [(1, tmp_path / "seed1"),
                                                                               (3, tmp_path / "seed3")]
