"""The shared Lightning trainer: checkpoints/last.ckpt exists after every epoch, not only at the end; the
training loader refuses a dataset smaller than one batch per device."""

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from gensis.config.train import TrainerConfig
from gensis.errors import GensisError
from gensis.training.trainer import make_trainer, training_loader


class Linear(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class SeesCheckpoint(L.Callback):
    def __init__(self, path):
        self.path, self.seen = path, []

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch > 0:     # a kill now must find the previous epoch's checkpoint
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            self.seen.append((trainer.current_epoch, state["epoch"], state["global_step"]))


def test_a_checkpoint_is_written_after_every_epoch(tmp_path):
    watcher = SeesCheckpoint(tmp_path / "checkpoints" / "last.ckpt")
    trainer = make_trainer(TrainerConfig(accelerator="cpu", devices="1", log_every_n_steps=1), tmp_path, [watcher],
                           epochs=3, progress=False)
    trainer.fit(Linear(), DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4))
    assert watcher.seen == [(1, 0, 2), (2, 1, 4)]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.ckpt"]


def test_the_training_loader_shuffles_drops_the_last_partial_batch_and_refuses_less_than_one_batch(tmp_path):
    trainer = make_trainer(TrainerConfig(accelerator="cpu", devices="1"), tmp_path, [], epochs=1, progress=False)
    data = SimpleNamespace(path="tiles.h5", workers=0)
    torch.manual_seed(0)
    loader = training_loader(TensorDataset(torch.arange(10.0)), 4, "train.batch_size", trainer, data)
    batches = [b[0] for b in loader]
    assert [len(b) for b in batches] == [4, 4]                      # 10 // 4 full batches, the 2 left dropped
    assert not torch.equal(torch.cat(batches), torch.arange(8.0))   # shuffled (P(identity order) < 1e-6)
    with pytest.raises(GensisError, match=r"data.path=tiles.h5: 3 training tiles, fewer than one batch "
                                          r"\(4 x 1 devices\); lower train.batch_size"):
        training_loader(TensorDataset(torch.arange(3.0)), 4, "train.batch_size", trainer, data)
