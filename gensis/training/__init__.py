"""Training helpers shared by the stages: per-iteration schedules."""
