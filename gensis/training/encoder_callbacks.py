"""Callbacks shared by the DINO stages (1 and 3): kNN monitoring, encoder export, DDP check."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch

from gensis.data.augment import eval_transform
from gensis.data.tile_source import open_tiles
from gensis.errors import GensisError
from gensis.evaluation.features import extract_features
from gensis.evaluation.knn import knn_predict_proba
from gensis.evaluation.split import train_test_split
from gensis.models.backbone import save_encoder
from gensis.training.trainer import save_metrics


class KNNMonitor(L.Callback):
    """kNN balanced accuracy of the teacher backbone on labeled tiles, every ``every`` epochs (rank 0)."""

    def __init__(self, path: str, every: int, batch_size: int, workers: int, img_size: int, mean, std):
        self.every = max(1, every)
        self.tiles = open_tiles(path, labels=True, transform=eval_transform(img_size, mean, std))
        if len(self.tiles.classes) < 2:
            raise GensisError(f"data.val={path}: needs at least two classes for kNN monitoring")
        self.split = train_test_split(self.tiles.labels, self.tiles.groups, 0.3, seed=0)
        self.batch_size, self.workers = batch_size, workers

    def on_train_epoch_end(self, trainer, module):
        epoch = trainer.current_epoch + 1
        if epoch % self.every and epoch != trainer.max_epochs:
            return
        if trainer.is_global_zero:
            from sklearn.metrics import balanced_accuracy_score

            features = extract_features(module.teacher.backbone, self.tiles, self.batch_size, self.workers,
                                        module.device)
            train, test = self.split
            proba = knn_predict_proba(features[train], self.tiles.labels[train], features[test],
                                      len(self.tiles.classes))
            score = balanced_accuracy_score(self.tiles.labels[test], proba.argmax(1))
            module.log("val/knn_balanced_accuracy", float(score), rank_zero_only=True)
            module.train()


class EncoderExport(L.Callback):
    """After every epoch (rank 0): ``encoder.safetensors`` + ``encoder.json`` (teacher backbone), ``metrics.csv``."""

    def on_train_epoch_end(self, trainer, module):
        if trainer.is_global_zero:
            save_encoder(trainer.default_root_dir, module.teacher.backbone, module.encoder_spec())
            save_metrics(trainer)


def teacher_checksum(module: L.LightningModule) -> float:
    return float(sum(p.double().sum().item() for p in module.teacher.parameters()))


class DDPConsistency(L.Callback):
    """After training, check every process holds the same teacher; write ``ddp_check.json``."""

    def on_train_end(self, trainer, module):
        value = torch.tensor([teacher_checksum(module)], dtype=torch.float64, device=module.device)
        gathered = trainer.strategy.all_gather(value).reshape(-1).cpu().tolist()
        if trainer.is_global_zero:
            consistent = max(gathered) - min(gathered) <= 1e-6 * max(1.0, abs(gathered[0]))
            (Path(trainer.default_root_dir) / "ddp_check.json").write_text(
                json.dumps({"teacher_checksums": gathered, "consistent": consistent}, indent=2))
