"""SSIMQuality: reference-free motion-artefact quality of MR brain images.

A ResNet looks at one 2-D slice and predicts the SSIM that slice would have
against its motion-free twin.  This package holds everything that does not
need Slicer or Qt: volume I/O, slicing, contrast augmentation, motion
corruption, SSIM, labels, training, scoring and evaluation.
"""
__version__ = "0.1.0"
