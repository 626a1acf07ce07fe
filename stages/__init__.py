"""The training programs: one LightningModule and a ``run(cfg)`` per stage. Only the CLI imports these."""
