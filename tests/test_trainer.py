"""The shared Lightning trainer: checkpoints/last.ckpt exists after every epoch, not only at the end."""

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from gensis.config.train import TrainerConfig
from gensis.training.trainer import make_trainer


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
