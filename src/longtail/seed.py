"""The seeds longtail takes (config `seed`, `longtail ingest --seed`).

A leaf of its own, so that ingest checks its seed without importing the config (YAML, h5py, the losses).
"""

# Seeds reach NumPy and Keras, which take 0 .. 2**32 - 1.
SEED_MAX = 2**32 - 1
