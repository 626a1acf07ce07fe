"""Stage 3's generated views in the training loop: the curriculum's progress, the interpolated images' batch,
and what is logged of them."""

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


def flat_interpolations(batch: dict) -> dict:
    """Items with n interpolated images each (``disentangle.per_item``: (B, n, 3, S, S) per role, alpha (B, n))
    as one batch of B * n, row b * n + k for item b's k-th image in all three roles and alpha; n = 1 as it is."""
    interp = batch.get("interp")
    if interp is not None and interp[0].dim() == 5:
        batch["interp"] = [x.flatten(0, 1) for x in interp]
        batch["alpha"] = batch["alpha"].flatten()
    return batch
