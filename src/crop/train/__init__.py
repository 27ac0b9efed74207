"""Self-training students, LST data construction and fine-tuning, and evaluation (seqeval).

Submodules are imported on demand (`crop.train.evaluate`, ...), so importing this package stays cheap."""
