"""benchmarks/quality.py: seeds trained by separate invocations, side by side, all end up in one results file."""

import json
import multiprocessing
from pathlib import Path

import pytest

from tests.conftest import load_benchmark


def own(seeds, settings=None):
    """What one invocation measured: its seeds' scores and seconds, and the generator's seconds."""
    return {**(settings or {"recipe": "tiny"}), "seeds": {str(s): {"stage1": {"knn": s / 10}} for s in seeds},
            "seconds": {"stage2": 7.0, "stage1": {str(s): 100.0 + s for s in seeds}}}


def test_each_write_merges_into_what_other_invocations_wrote(tmp_path):
    quality = load_benchmark("quality")
    path = tmp_path / "quality.json"
    quality.save_results(path, own([0]), 5.0)
    # two more invocations, each writing only its own seed
    quality.save_results(path, own([1]), 10.0)
    merged = quality.save_results(path, own([2]), 20.0)
    assert json.loads(path.read_text()) == merged
    assert sorted(merged["seeds"]) == ["0", "1", "2"]
    assert merged["seeds"]["1"] == {"stage1": {"knn": 0.1}}
    assert merged["seconds"] == {"stage2": 7.0, "stage1": {"0": 100.0, "1": 101.0, "2": 102.0}}
    assert merged["wall_seconds"] == 35.0
    assert merged["recipe"] == "tiny"


def test_a_file_made_meanwhile_with_other_settings_is_refused_and_kept(tmp_path):
    quality = load_benchmark("quality")
    path = tmp_path / "quality.json"
    quality.save_results(path, own([0], {"recipe": "tiny"}), 1.0)
    before = path.read_text()
    with pytest.raises(SystemExit, match="recipe"):
        quality.save_results(path, own([1], {"recipe": "other"}), 1.0)
    assert path.read_text() == before


def test_a_file_from_before_stage2_overrides_counts_as_the_default_generator():
    quality = load_benchmark("quality")
    before = {"recipe": "tiny", "stage3_overrides": [], "seeds": {}}   # written before --stage2 existed
    assert quality.changed_settings(before, {"recipe": "tiny", "stage2_overrides": []}) == []
    assert quality.changed_settings(before, {"recipe": "tiny", "stage2_overrides": ["train.epochs=6"]}) == \
        ["stage2_overrides"]
    assert quality.changed_settings({}, {"recipe": "tiny", "stage2_overrides": ["train.epochs=6"]}) == []
    made = {"recipe": "tiny", "stage2_overrides": ["train.epochs=6"]}
    assert quality.changed_settings(made, {"recipe": "tiny", "stage2_overrides": []}) == ["stage2_overrides"]


def test_a_seed_trained_again_replaces_its_own_scores_only(tmp_path):
    quality = load_benchmark("quality")
    path = tmp_path / "quality.json"
    quality.save_results(path, own([0, 1]), 1.0)
    again = own([1])
    again["seeds"]["1"] = {"stage1": {"knn": 0.9}}
    merged = quality.save_results(path, again, 1.0)
    assert merged["seeds"] == {"0": {"stage1": {"knn": 0.0}}, "1": {"stage1": {"knn": 0.9}}}


def write_many(args):
    path, first, start = args
    quality = load_benchmark("quality")
    start.wait()   # every writer loaded: their writes overlap
    for seed in range(first, first + 15):
        quality.save_results(Path(path), own([seed]), 1.0)
        quality.save_entry(Path(path).with_name("sweep.json"), "setting",
                           {"seeds": {str(seed): seed}, "seconds": {str(seed): 1.0}})


def test_writers_running_at_the_same_time_lose_nothing(tmp_path):
    path = tmp_path / "quality.json"
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(4) as pool:
        start = manager.Barrier(4)
        pool.map(write_many, [(str(path), first, start) for first in (0, 100, 200, 300)])
    expected = sorted(str(first + k) for first in (0, 100, 200, 300) for k in range(15))
    results = json.loads(path.read_text())
    assert sorted(results["seeds"]) == expected
    assert sorted(results["seconds"]["stage1"]) == expected
    assert results["wall_seconds"] == 60.0
    assert sorted(json.loads((tmp_path / "sweep.json").read_text())["setting"]["seeds"]) == expected
