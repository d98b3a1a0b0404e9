"""flair-stream packer: FLAIR-HUB GeoTIFF tree -> WebDataset shards + Parquet index."""

__version__ = "0.1.0"
