"""Where packs live: reading them (`read`: the loader's sources) and writing them (`write`: the
packer's output stores), with the remote-I/O rules both follow defined once.

- `read`: `open_source(url)` for a local folder, `s3://`, `https://` and `hf://` (size, byte
  ranges, chunks), plus the shard integrity check against the manifest;
- `write`: `open_store(out)` for a local folder or `s3://` (atomic small files, whole-file puts);
- `s3`: the endpoint, credentials and client settings of every S3 client, and S3 URL parts;
- `retry`: which failures are transient and how long to keep trying (backoff with jitter),
  for S3, HTTP and the Hub alike.

The Hub's URL scheme (`hf://datasets/...`, `$HF_ENDPOINT`, `$HF_TOKEN`) is `packer.hub`, which
the packer's zip reader uses too. Nothing here imports torch.
"""
