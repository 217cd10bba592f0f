"""What tests and benchmarks share: tiny models per architecture, synthetic parent pairs,
the seed config, and an independent transcription of mergekit's SLERP."""
