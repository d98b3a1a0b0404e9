"""`flair-simulate`: predict a training run's data side before paying for it.

Driven by the project's own code, not by a separate model of it:
- `workload`: the index and the epoch plan (`trainer.data.catalog`, `trainer.data.distribution`,
  the reader's request coalescing) give, rank by rank, exactly which samples are read, how many
  bytes and ranged requests that takes and how many bytes are decoded;
- `calibrate`: a short measurement of this machine running the loader in the tree (CPU seconds per
  sample in the loader processes and in the training process, thread scaling, HTTP request cost,
  worker start-up, resident memory), so the prediction follows whatever the loader code does now;
- `model`: a closed queueing network per node (threads cycling through store latency, the shared
  link, the cores and each process's interpreter lock), solved by mean-value analysis, plus the
  store's request-rate cap and the model's step time;
- `storage`: presets for a local disk, S3 in region and the Hugging Face Hub;
- `cli`: the command; `tools/validate_simulator.py` checks predictions against real runs here.
"""
