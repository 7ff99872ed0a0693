"""Experiment configs: the defaults and variants, and their validation."""
