"""csa_tf: class-specific affinity guided multimodal unpaired segmentation (MICCAI 2020)."""

__version__ = "0.1.0"
