"""yarn-cli: extend the context of GGUF models with YaRN, and measure that it works."""

__version__ = "0.1.0"
