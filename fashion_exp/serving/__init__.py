"""Stage 7: the model at work: predict on files, and the HTTP service with its upload page."""
