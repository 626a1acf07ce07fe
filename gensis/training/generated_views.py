"""Stage 3's generated views in the training loop: the curriculum's progress and what is logged of them."""

from __future__ import annotations

from gensis.training.schedules import curriculum_progress


def advance_curriculum(module) -> None:
    """At an epoch's start: tell the dataset (and its workers) where ``gen.curriculum`` stands."""
    cfg = module.cfg
    if cfg.gen.curriculum != "none" and getattr(module, "_trainer", None) is not None:
        module.trainer.train_dataloader.dataset.set_progress(
            curriculum_progress(module.current_epoch, cfg.optim.epochs, cfg.gen.curriculum))


def view_logs(batch: dict) -> dict:
    """The share of generated second crops and, with views at several noise levels, their mean level."""
    logs = {"generated_share": batch["generated"].float().mean()}
    generated = batch["generated"]
    if "view_level" in batch and generated.any():
        logs["view_level"] = batch["view_level"][generated].float().mean()
    return logs
