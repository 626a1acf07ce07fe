"""ssl.method=mocov3|byol|simclr in stages 1 and 3: training, export, resume, the momentum update, and which
rows each loss term gets (a constructed network whose outputs name their crop)."""

import csv
import math

import numpy as np
import pytest
import torch

from gensis.cli import _all_blocks
from gensis.config.compose import compose_config
from gensis.config.stage1 import Stage1Config
from gensis.config.stage3 import Stage3Config
from gensis.models.backbone import load_encoder
from gensis.training.siamese_module import SiameseModule
from tests.conftest import run_cli
from tests.test_stage3 import views  # noqa: F401  (the fixture)

METHODS = ["mocov3", "byol", "simclr"]


def rows(run):
    return [r for r in csv.DictReader(open(run / "metrics.csv")) if r.get("train/loss")]


@pytest.mark.parametrize("method", METHODS)
def test_stage1_trains_exports_and_resumes(labeled_tiles, tmp_path, method):
    out = tmp_path / "run"
    args = ("stage1", f"data.path={labeled_tiles}", f"out={out}", "experiment=tiny", f"ssl.method={method}")
    first = run_cli(*args, "optim.epochs=1")
    assert first.returncode == 0, first.stderr[-2000:]
    assert all(math.isfinite(float(r[f"train/{method}"])) for r in rows(out))
    exported, _ = load_encoder(out)
    teacher = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    for name, value in exported.state_dict().items():       # the export is the momentum (or copied) backbone
        torch.testing.assert_close(value, teacher[f"teacher.backbone.{name}"])
    again = run_cli(*args, "optim.epochs=2", "resume=true")
    assert again.returncode == 0, again.stderr[-2000:]
    assert [int(r["step"]) for r in rows(out)] == list(range(2 * (36 // 8)))


@pytest.mark.parametrize("method, momentum, extra", [("byol", 0.25, []), ("mocov3", 0.25, []), ("simclr", 0.0, []),
                                                     ("simclr", 0.75, ["ssl.simclr_ema=0.75"])])
def test_the_momentum_network_moves_towards_the_online_one_by_name(tmp_path, method, momentum, extra):
    cfg = compose_config("stage1", Stage1Config, ["data.path=x", f"out={tmp_path}", "experiment=tiny",
                                                  f"ssl.method={method}", "ssl.momentum=0.25",
                                                  "ssl.momentum_end=0.25", *extra], other_blocks=_all_blocks())
    module = SiameseModule(cfg, steps_per_epoch=2)
    with torch.no_grad():
        for p in module.teacher.parameters():
            p.fill_(0.0)
        for p in module.student.parameters():
            p.fill_(1.0)
    module.on_train_batch_end(None, None, 0)
    for name, p in module.teacher.named_parameters():          # t <- m t + (1 - m) s
        torch.testing.assert_close(p, torch.full_like(p, 1 - momentum), msg=name)
    predictor = [n for n, _ in module.student.named_parameters() if ".predictor." in n]
    assert bool(predictor) == (method != "simclr")               # the predictor has no momentum twin
    assert not any(".predictor." in n for n, _ in module.teacher.named_parameters())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("batch_norm", [True, False])
def test_without_batch_norm_no_projection_depends_on_the_rest_of_its_batch(tmp_path, method, batch_norm):
    cfg = compose_config("stage1", Stage1Config, ["data.path=x", f"out={tmp_path}", "experiment=tiny",
                                                  f"ssl.method={method}", f"ssl.batch_norm={batch_norm}"],
                         other_blocks=_all_blocks())
    module = SiameseModule(cfg, steps_per_epoch=2)
    for net in (module.student, module.teacher):
        head = net.head.train()
        norms = [m for m in head.modules() if isinstance(m, torch.nn.BatchNorm1d)]
        assert bool(norms) == batch_norm
        torch.manual_seed(0)
        x = torch.randn(8, net.backbone.num_features)
        alone, with_others = head(x[:4]), head(torch.cat([x[:4], 10 * x[4:] + 3]))[:4]
        # batch norm (training mode) normalises with the batch's statistics: other rows move a row's output
        assert torch.allclose(alone, with_others, atol=1e-5) == (not batch_norm)


@pytest.mark.parametrize("method,per_item", [(m, 1) for m in METHODS] + [("simclr", 2), ("byol", 2)])
def test_each_term_gets_the_right_rows(labeled_tiles, views, tmp_path, method, per_item):  # noqa: F811
    """Outputs (fill, 1) per image: the pairs are (each global crop's target, every other crop's query); the
    interpolated query's target mixes its sources' (fill, 1) by alpha before normalising. With per_item images
    per item (flattened: m = per_item * B rows) the task gets all m and the pairs none of them."""
    cfg = compose_config("stage3", Stage3Config, [f"data.path={labeled_tiles}", f"views={views}",
                                                  f"out={tmp_path / 'x'}", "experiment=tiny", f"ssl.method={method}",
                                                  "disentangle.weight=2"], other_blocks=_all_blocks())
    from stages.stage3 import GenSiameseModule

    module = GenSiameseModule(cfg, steps_per_epoch=1)

    class FakeNet(torch.nn.Module):
        def forward(self, crops):
            return torch.cat([torch.stack([c[:, 0, 0, 0], torch.ones(len(c))], dim=1) for c in crops])

    module.student, module.teacher = FakeNet(), FakeNet()
    seen = []
    module.criterion = lambda query, target, weights=None: seen.append((query.clone(), target.clone())) or torch.tensor(1.0)
    import gensis.training.siamese_module as siamese

    pairs_seen = []
    original = siamese.nt_xent
    siamese.nt_xent = lambda z1, z2, t, w=None: (pairs_seen.append((z1[:, 0].tolist(), z2[:, 0].tolist()))
                                                 or torch.tensor(1.0))
    try:
        b, size, local = 3, cfg.crops.global_size, cfg.crops.local_size
        crops = [torch.full((b, 3, size, size), float(i)) for i in range(2)]
        crops += [torch.full((b, 3, local, local), float(i)) for i in (2, 3)]
        m = per_item * b
        interp = [torch.full((m, 3, size, size), v) for v in (10.0, 11.0, 12.0)]      # v_int, v1, v2
        parts = module.losses({"image": crops, "interp": interp, "generated": torch.zeros(b, dtype=torch.bool),
                               "alpha": torch.full((m,), 0.3)}, teacher_temp=0.04)
    finally:
        siamese.nt_xent = original
    *main, (query, target) = seen
    if method == "simclr":
        assert pairs_seen == [([i] * b, [j] * b)
                              for i, j in [(0.0, 1.0), (0.0, 2.0), (0.0, 3.0), (1.0, 2.0), (1.0, 3.0)]]
        assert main == []
    else:
        assert [(q[:, 0].tolist(), k[:, 0].tolist()) for q, k in main] == [([q] * b, [k] * b) for q, k in [
            (1.0, 0.0), (2.0, 0.0), (3.0, 0.0), (0.0, 1.0), (2.0, 1.0), (3.0, 1.0)]]
    n_pairs = 5 if method == "simclr" else 6
    assert query[:, 0].tolist() == [10.0] * m                          # the interpolated view's query
    mix = 0.3 * 11.0 + 0.7 * 12.0                                       # alpha weighs source 1
    np.testing.assert_allclose(target.numpy(), np.tile([mix, 1.0] / np.hypot(mix, 1.0), (m, 1)), rtol=1e-6)
    assert parts["loss"].item() == pytest.approx(1.0 + 2.0 * 1.0 / n_pairs)


@pytest.mark.parametrize("method", METHODS)
def test_stage3_with_generated_views_and_disentanglement(labeled_tiles, views, tmp_path, method):  # noqa: F811
    out = tmp_path / "run"
    result = run_cli("stage3", f"data.path={labeled_tiles}", f"views={views}", f"out={out}", "experiment=tiny",
                     "optim.epochs=1", f"ssl.method={method}", "gen.p=0.5")
    assert result.returncode == 0, result.stderr[-2000:]
    steps = rows(out)
    assert steps and all(math.isfinite(float(r["train/disentangle"])) for r in steps)
    assert 0 < np.mean([float(r["train/generated_share"]) for r in steps]) < 1
    load_encoder(out)


def test_a_method_needs_two_global_crops(labeled_tiles, tmp_path):
    result = run_cli("stage1", f"data.path={labeled_tiles}", f"out={tmp_path / 'r'}", "experiment=tiny",
                     "ssl.method=byol", "crops.n_global=1")
    assert result.returncode == 2 and "crops.n_global must be >= 2" in result.stderr
    assert not (tmp_path / "r").exists()                        # refused before anything is written
    result = run_cli("stage1", f"data.path={labeled_tiles}", f"out={tmp_path / 'r'}", "experiment=tiny",
                     "ssl.method=swav")
    assert result.returncode == 2 and "ssl.method must be one of dino, mocov3, byol, simclr" in result.stderr
