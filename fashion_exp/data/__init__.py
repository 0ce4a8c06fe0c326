"""Stage 1: the images. Discovery and the dataset check, decoding, augmentation, download.

Only this package opens image files.
"""
