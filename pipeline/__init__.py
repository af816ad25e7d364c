"""Per-call processing: audio at the edge, VAD segmentation, streaming recognition, sessions."""
