"""Stage 2: the frozen backbone, where it runs, and the on-disk cache; Features feeds tune and train-final."""
