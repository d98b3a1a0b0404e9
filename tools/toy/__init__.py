"""Building blocks of `flair-toy` (the synthetic FLAIR-HUB generator in `tools.flair_toy`).

plan: which patches, ROIs, dates, splits and missing modalities a toy tree has (cheap, no pixels).
scene: the synthetic landscape of an ROI and the rendering of every modality of a patch (numpy).
writers: GeoTIFF, GeoPackage and split-CSV output, each written to a temp name then renamed.
"""
