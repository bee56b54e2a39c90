"""Data: synthetic multi-view humans, augmentation, batches."""
