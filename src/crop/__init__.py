"""crop: zero-shot cross-lingual NER by labeled sequence translation (CROP, Yang et al. 2023)."""

__version__ = "0.1.0"
