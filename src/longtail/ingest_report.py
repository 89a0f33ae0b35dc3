"""The report every ingest writes beside its splits: its file name, a leaf that tracking and ingest both import."""

# ingest.json: n_images, n_classes, class_counts, splits, rejected, ignored, source (docs/architecture.md "ingest.json").
INGEST_FILE = "ingest.json"
