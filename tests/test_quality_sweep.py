"""benchmarks/quality_sweep.py: gains paired by seed, their 95% t-intervals, and the comparison table and plot."""

import numpy as np
import pytest

from tests.conftest import BENCHMARKS, load_benchmark


@pytest.fixture
def sweep(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))   # the script imports quality.py as a sibling
    return load_benchmark("quality_sweep")


def scores(knn, few_shot_10=0.5):
    probes = {"knn": knn, "linear": 0.9, "few_shot_1": 0.5, "few_shot_5": 0.5, "few_shot_10": few_shot_10,
              "few_shot_25": 0.5}
    return {p: {"balanced_accuracy": v} for p, v in probes.items()}


def test_t_interval_is_mean_plus_minus_t_s_over_root_n(sweep):
    # n = 2: t(0.975, 1 dof) = 12.706 (any t table), s = 0.01 sqrt(2), so half-width = 12.706 * 0.01 = 0.12706
    mean, low, high = sweep.t_interval(np.array([0.01, 0.03]))
    assert mean == pytest.approx(0.02)
    assert (high - mean) == pytest.approx(0.12706, abs=1e-4) and (mean - low) == pytest.approx(0.12706, abs=1e-4)
    assert sweep.t_interval(np.array([0.05])) == (0.05, 0.05, 0.05)   # one seed: no interval


def test_gains_are_paired_on_the_seeds_both_have(sweep, tmp_path):
    base = {"seeds": {s: {"stage1": scores(0.80 + 0.01 * int(s))} for s in ("1", "2", "3")}}
    results = {"task": {"seeds": {"1": scores(0.83, 0.7), "2": scores(0.85, 0.6)}}}   # seed 3 not run
    both, gains = sweep.paired_gains(base, results, ["1", "2", "3"], "stage1", "task")
    assert both == ["1", "2"]
    np.testing.assert_allclose(gains["knn"], [0.83 - 0.81, 0.85 - 0.82])
    np.testing.assert_allclose(gains["few_shot_10"], [0.2, 0.1])
    rows = sweep.comparison_rows([("stage1", "task", both, gains)])
    assert rows[-1].startswith("| task - stage1 | 1,2 | +0.025 [")
    sweep.plot_comparisons([("stage1", "task", both, gains)], tmp_path / "compare.png")
    assert (tmp_path / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match="nope is neither a setting"):
        sweep.paired_gains(base, results, ["1", "2"], "stage1", "nope")


def test_seed_placeholder_names_each_seeds_own_run(sweep):
    setting = sweep.parse_setting(["cont", "init=out/sweep/simclr_stage1/seed{seed}", "optim.epochs=4"])
    assert setting["overrides"] == ["init=out/sweep/simclr_stage1/seed{seed}", "optim.epochs=4"]   # kept as given
    assert sweep.for_seed(setting["overrides"], 12) == ["init=out/sweep/simclr_stage1/seed12", "optim.epochs=4"]
