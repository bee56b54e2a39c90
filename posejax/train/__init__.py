"""Training: optimiser and schedule, the pure train step, mesh and shardings."""
