"""The folder a competition ships and `longtail data` writes (docs/architecture.md "CLI"): the names in it."""

# OUT/test_labels.csv (id,label by class name): the held-out answers `longtail score` and `longtail run --test` read.
TEST_LABELS_FILE = "test_labels.csv"
