"""Stage 2: the frozen backbone and the on-disk feature cache; prepare_features feeds tune and train-final."""
