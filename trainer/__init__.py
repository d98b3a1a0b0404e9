"""flair-stream trainer: streaming loader, FLAIR-UPerFuse model, Accelerate training loop."""
