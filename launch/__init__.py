"""Running a job: config schema and loader, training loop, checkpointing, entry points."""
