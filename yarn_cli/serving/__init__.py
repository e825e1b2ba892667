"""Models served over HTTP: the OpenAI-compatible API that llama-server, Ollama, LM Studio and vLLM share."""

DEFAULT_READ_TIMEOUT = 600.0  # seconds: a long prompt on a CPU takes minutes
