"""The shard format: everything that says what a pack's shards and index hold, writer and
reader side by side (as Mosaic streaming keeps `format/mds/{writer,reader,encodings}.py` together).

- `names`: member names (`<patch_id>.json`, `<patch_id>.<MODALITY>.npy.zst`), their webdataset
  keys, and the format version a pack declares;
- `encoding`: a member's bytes (one zstd frame of an `.npy` file; compact JSON), the per-member
  checksum, compression settings, and the one decoder every reader uses (the loader,
  `flair-pack verify`, `flair-pack inspect`, the raw-sample API, webdataset's handler);
- `columns`: the index columns (names, Arrow types, order);
- `writer`: a sample's members, and the deterministic tar layout that records their offsets;
- `reader`: tar bytes -> members -> raw samples, and the check of a decoded array against the
  pack's modality table.

Stages ask these modules rather than spelling a suffix or a column name themselves. The files
of a pack (`index.parquet`, `manifest.json`, shard paths) are named in `packer.schema`; writing
and reading the index file is `packer.index`.
"""
