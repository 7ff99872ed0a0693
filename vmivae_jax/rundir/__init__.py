"""A run's directory: config claim and locking, checkpoints, metrics, sweeps."""
