"""Training: config to objects, the jitted steps and the training loops."""
