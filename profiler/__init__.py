"""genedge.profiler: measure diffusion pipelines on a GPU into resumable Parquet records."""
