"""The VMI-VAE model: networks, conv formulations, the model bundle, objectives."""
