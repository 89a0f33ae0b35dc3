"""longtail: long-tailed image classification experiments as reproducible pipeline runs."""

__version__ = "0.1.0"
