"""gensis demo at experiment=tiny: every step end to end, the report, resuming."""

import json

import h5py

from tests.conftest import run_cli


def test_demo_runs_every_step_writes_the_report_and_resumes(tiny_demo, tmp_path):
    out = tiny_demo
    first = (out.parent / "first_run.log").read_text()
    for step in ("synthetic slide", "tiling", "stage 1", "stage 2", "generate", "stage 3", "eval of random",
                 "eval of stage1", "eval of stage3", "eval of stage3 on the same tiles in grayscale"):
        assert step in first
    for path in ("tiling/tiles.h5", "tiling/qc/synthetic.png", "stage1/encoder.safetensors",
                 "stage2/pipeline/model_index.json", "stage3/encoder.safetensors", "report.md",
                 "report/losses.png", "report/views.png", "report/interpolation.png", "report/results.png"):
        assert (out / path).is_file(), path
    with h5py.File(out / "views.h5", "r") as f, h5py.File(out / "tiling" / "tiles.h5", "r") as tiles:
        assert f["generated"].shape[0] == tiles["images"].shape[0]   # stage 3 trained on views of these tiles
    report = (out / "report.md").read_text()
    colour, gray = report.index("On tiles as they are"), report.index("On the same tiles in grayscale")
    for name in ("random", "stage1", "stage3"):               # the untrained encoder beside both, on both tasks
        for task, table in (("", report[colour:gray]), ("_gray", report[gray:])):
            scores = json.loads((out / f"eval_{name}{task}" / "metrics.json").read_text())
            assert scores["grayscale"] is (task == "_gray")
            assert f"| {name} | knn | {scores['knn']['balanced_accuracy']:.3f} |" in table
            assert f"| {name} | 1-shot (prototype, 100 draws) | {scores['few_shot']['1']['mean']:.3f}" in table
    generation = json.loads((out / "stage2" / "report" / "generation.json").read_text())
    assert f"Label fidelity {generation['label_fidelity']['views']:.2f}" in report
    assert f"Interpolation reach {generation['interpolation_reach']:.2f}" in report

    second = run_cli("demo", f"out={out}", "experiment=tiny", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("done already") == 12

    # a step killed after its checkpoint: the next run resumes it instead of refusing the run dir
    (out / ".steps" / "stage3.json").unlink()
    third = run_cli("demo", f"out={out}", "experiment=tiny", cwd=tmp_path)
    assert third.returncode == 0, third.stderr[-3000:]
    assert third.stdout.count("done already") == 11 and "stage 3 done" in third.stdout

    # other settings into the same folder would mix runs: refused, naming the step
    other = run_cli("demo", f"out={out}", "experiment=tiny", "slide_size=2048", cwd=tmp_path)
    assert other.returncode == 2 and "other settings" in other.stderr and "'slide'" in other.stderr


def test_demo_names_a_missing_recipe(tmp_path):
    result = run_cli("demo", f"out={tmp_path / 'demo'}", "recipe=nothing", cwd=tmp_path)
    assert result.returncode == 2 and "recipe=nothing" in result.stderr and "tiny" in result.stderr
