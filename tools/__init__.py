"""flair-stream tools: synthetic FLAIR-HUB generator, benchmarks, shard inspection."""
