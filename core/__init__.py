"""The layer both engines stand on: model references and sources (local folder, Hub id,
.gguf, bundled) with one conversion cache, the one user-error type, and the public-mode
policy. It imports neither `merging` nor `inference`."""
