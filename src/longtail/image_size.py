"""The image sizes longtail accepts: config `data.image_size`, `longtail ingest --image-size` and the decoders.

A module of its own, so that the decoders (and the pool's fork server, which imports them) check the
bound without importing the config and what it imports (YAML, h5py, the losses).
"""

IMAGE_SIZE_MIN, IMAGE_SIZE_MAX = 8, 1024
