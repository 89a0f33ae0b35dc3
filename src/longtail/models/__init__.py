"""The model registry: builders registered by name, chosen by the experiment config."""
