"""The Lightning ``Trainer`` every training stage runs in: loggers, resumable checkpoint, devices."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L

from gensis.config.train import TrainerConfig
from gensis.training.run_dir import merge_metrics, session_log_dir

if TYPE_CHECKING:
    from torch.utils.data import DataLoader


def adamw_with_warmup(parameters, lr: float, weight_decay: float, warmup_steps: int) -> dict:
    """AdamW with a linear learning-rate warm-up over ``warmup_steps``, then constant (Lightning's
    ``configure_optimizers`` format, stepped every optimizer step)."""
    import torch

    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    warmup = max(1, warmup_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def training_loader(dataset, batch_size: int, batch_key: str, trainer: L.Trainer, data) -> DataLoader:
    """The shuffled, drop-last loader every training stage fits on, after checking that ``dataset`` holds at
    least one batch per device (else one line naming ``data.path`` and ``batch_key``, the key to lower)."""
    import torch
    from torch.utils.data import DataLoader

    from gensis.errors import GensisError

    if len(dataset) < batch_size * trainer.world_size:
        raise GensisError(f"data.path={data.path}: {len(dataset)} training tiles, fewer than one batch "
                          f"({batch_size} x {trainer.world_size} devices); lower {batch_key}")
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=data.workers,
                      persistent_workers=data.workers > 0, pin_memory=torch.cuda.is_available())


def save_metrics(trainer: L.Trainer) -> None:
    """Flush every logger and rebuild the run's ``metrics.csv`` (rank 0, end of an epoch)."""
    for logger in trainer.loggers:
        logger.save()
    merge_metrics(Path(trainer.default_root_dir))


def make_trainer(t: TrainerConfig, out: Path, callbacks: list, epochs: int, progress: bool,
                 gradient_clip_val: float | None = None) -> L.Trainer:
    """CSV log per launch (``logs/session_N``), TensorBoard, ``checkpoints/last.ckpt`` every epoch."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    loggers = [CSVLogger(save_dir=str(out), name="logs", version=session_log_dir(out))]
    try:
        loggers.append(TensorBoardLogger(save_dir=str(out), name="tensorboard", version="", default_hp_metric=False))
    except ModuleNotFoundError:
        pass
    # one checkpoint, checkpoints/last.ckpt, rewritten after every epoch (save_last alone would only write it
    # when a top-k checkpoint is saved, i.e. at the end of training)
    checkpoint = ModelCheckpoint(dirpath=str(out / "checkpoints"), filename="last", save_top_k=1, monitor=None,
                                 every_n_epochs=1, save_on_train_epoch_end=True, enable_version_counter=False)
    return L.Trainer(default_root_dir=str(out), accelerator=t.accelerator, devices=t.resolved_devices(),
                     num_nodes=t.num_nodes, strategy=t.strategy, precision=t.resolved_precision(),
                     max_epochs=epochs, max_steps=t.max_steps, logger=loggers,
                     callbacks=[checkpoint, *callbacks], log_every_n_steps=t.log_every_n_steps,
                     enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
                     use_distributed_sampler=True, deterministic=False, gradient_clip_val=gradient_clip_val)
