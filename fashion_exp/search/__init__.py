"""Stage 5: the `tune` job: heads trained on cached features, trials chosen by keras-tuner."""
