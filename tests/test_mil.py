"""gensis synth cohort= and gensis mil: a synthetic cohort whose slide label is one small region, attention MIL
that finds it with good features and scores chance with shuffled labels, the attention formula, the folds."""

import csv
import json
import random

import h5py
import numpy as np
import pytest
import torch

from gensis.evaluation.mil_run import classification_metrics, make_folds
from gensis.models.attention_mil import GatedAttentionMIL
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """20 synthetic slides, tiled, with colour-statistics features per tile (mean, sd, dark share: features known
    to tell the nuclei texture from stroma, fat and mucus)."""
    root = tmp_path_factory.mktemp("cohort")
    result = run_cli("synth", "cohort=20", f"out={root}", "width=1024", "height=1024", "progress=false")
    assert result.returncode == 0, result.stderr
    result = run_cli("tile", f"slides={root / 'slides.csv'}", f"out={root / 'tiles'}", "experiment=tiny")
    assert result.returncode == 0, result.stderr
    (root / "features").mkdir()
    for coords_file in sorted((root / "tiles" / "coords").glob("*.h5")):
        with h5py.File(root / "tiles" / "tiles.h5") as f:
            rows = np.flatnonzero(np.array([s.decode() for s in f["slide"][:]]) == coords_file.stem)
            x = f["images"][rows[0]: rows[-1] + 1].astype(np.float32) / 255
            coords = f["coords"][rows[0]: rows[-1] + 1]
        values = np.concatenate([x.mean((1, 2)), x.std((1, 2)), (x.mean(-1) < 0.5).mean((1, 2))[:, None]], 1)
        with h5py.File(root / "features" / f"{coords_file.stem}.h5", "w") as g:
            g["features"], g["coords"] = values, coords
            g.attrs["patch_size_level0"] = 128
            g.attrs["slide_path"] = str(root / "slides" / f"{coords_file.stem}.svs")
    return root


def mil(cohort, labels, out):
    result = run_cli("mil", f"features={cohort / 'features'}", f"labels={labels}", f"out={out}",
                     "trainer.accelerator=cpu", "progress=false")
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads((out / "metrics.json").read_text())


def test_the_cohorts_label_is_one_small_region_of_nuclei(cohort):
    rows = list(csv.DictReader(open(cohort / "slides.csv")))
    assert [int(r["label"]) for r in rows] == [i % 2 for i in range(20)]
    for row in rows:
        with h5py.File(cohort / "tiles" / "coords" / f"{row['slide']}.h5") as f:
            tile_labels = f["labels"][:]
        nuclei = int((tile_labels == 0).sum())                     # the nuclei texture is class 0 of the label map
        assert (nuclei > 0) == (row["label"] == "1") and nuclei <= 4, row   # small: a few of ~38 tiles


def test_mil_finds_the_region_with_good_features_and_scores_chance_with_shuffled_labels(cohort, tmp_path):
    metrics = mil(cohort, cohort / "slides.csv", tmp_path / "mil")
    assert metrics["auc"] > 0.9 and metrics["balanced_accuracy"] > 0.85 and len(metrics["folds"]) == 5
    held_out = [s for fold in metrics["folds"] for s in fold["slides"]]
    assert sorted(held_out) == sorted(f"case{i:03d}" for i in range(20))   # every slide held out once
    hits = []
    with h5py.File(tmp_path / "mil" / "attention.h5") as attention:
        for i in range(1, 20, 2):                                   # the slides with the region
            with h5py.File(cohort / "tiles" / "coords" / f"case{i:03d}.h5") as f:
                tile_labels = f["labels"][:]
            hits.append(tile_labels[int(np.argmax(attention[f"case{i:03d}"][:]))] == 0)
    assert np.mean(hits) >= 0.8                                     # attention falls on the region
    assert len(list((tmp_path / "mil" / "heatmaps").glob("*.png"))) == 4
    assert "mean +/- sd" in (tmp_path / "mil" / "report.md").read_text()
    rows = list(csv.DictReader(open(cohort / "slides.csv")))
    labels = [r["label"] for r in rows]
    random.Random(1).shuffle(labels)
    with open(tmp_path / "shuffled.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["slide", "label"])
        writer.writeheader()
        writer.writerows({"slide": r["slide"], "label": label} for r, label in zip(rows, labels))
    shuffled = mil(cohort, tmp_path / "shuffled.csv", tmp_path / "shuffled")
    assert shuffled["auc"] < 0.75


def test_gated_attention_follows_its_equation():
    torch.manual_seed(0)
    model = GatedAttentionMIL(in_dim=3, n_classes=2, hidden_dim=4, attention_dim=2, dropout=0.0).eval()
    h_in = torch.randn(5, 3)
    logits, attention = model(h_in)
    h = torch.relu(h_in @ model.project[0].weight.T + model.project[0].bias)
    v = torch.tanh(h @ model.attention_v.weight.T + model.attention_v.bias)
    u = torch.sigmoid(h @ model.attention_u.weight.T + model.attention_u.bias)
    scores = (v * u) @ model.attention_w.weight[0] + model.attention_w.bias
    expected_a = torch.exp(scores) / torch.exp(scores).sum()
    torch.testing.assert_close(attention, expected_a)
    torch.testing.assert_close(logits, (expected_a @ h) @ model.classifier.weight.T + model.classifier.bias)


def test_folds_never_split_a_patient_and_keep_both_classes():
    y = np.array([0, 1] * 15)
    patients = [f"p{i // 3}" for i in range(30)]                   # 3 slides per patient
    folds = make_folds(y, patients, [""] * 30, 5, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(30))
    for test in folds:
        inside = {patients[i] for i in test}
        outside = {patients[i] for i in range(30) if i not in set(test.tolist())}
        assert not inside & outside and set(y[test]) == {0, 1}
    given = make_folds(y, patients, ["a", "b", "a"] * 10, 5, seed=0)
    assert [len(f) for f in given] == [20, 10]                     # a fold column wins


def test_metrics_of_known_predictions():
    y = np.array([0, 0, 1, 2])
    probabilities = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    result = classification_metrics(y, probabilities, 3, ordinal=True)
    assert result["balanced_accuracy"] == pytest.approx((0.5 + 1 + 1) / 3)
    # quadratic kappa of (true, predicted) = (0,0), (0,1), (1,1), (2,2), written out: 1 - sum w O / sum w E
    observed = np.zeros((3, 3))
    for t, p in [(0, 0), (0, 1), (1, 1), (2, 2)]:
        observed[t, p] += 1
    expected = np.outer(observed.sum(1), observed.sum(0)) / 4
    weights = np.array([[(i - j) ** 2 / 4 for j in range(3)] for i in range(3)])
    assert result["quadratic_kappa"] == pytest.approx(1 - (weights * observed).sum() / (weights * expected).sum())
