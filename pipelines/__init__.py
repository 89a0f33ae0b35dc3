"""Kubeflow pipelines: the training pipeline, the sweep, and the compiler entry point."""
