"""The timed training loop of the lightly drivers: ``steps`` steps over a loader, seconds per step after warm-up."""

import time


def timed_steps(loader, step, steps: int, warmup: int, batch: int) -> dict:
    """Call ``step(batch, index)`` for ``steps`` batches of ``loader`` (epochs repeat as needed); returns
    seconds per step and images per second over the steps after the first ``warmup``."""
    index, times = 0, []
    while index < steps:
        for item in loader:
            step(item, index)
            times.append(time.perf_counter())
            index += 1
            if index >= steps:
                break
    timed = times[warmup:]
    seconds = (timed[-1] - timed[0]) / (len(timed) - 1)
    return {"seconds_per_step": seconds, "images_per_s": batch / seconds, "steps_timed": len(timed) - 1}
