"""Models served over HTTP: the OpenAI-compatible API that llama-server, Ollama, LM Studio and vLLM share."""
