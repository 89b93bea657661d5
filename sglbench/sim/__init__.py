"""SGLang-compatible simulator: HTTP server, continuous-batching engine and timing model."""
