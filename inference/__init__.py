"""flair-stream inference: patch-level prediction and zonal (large-area) detection."""
