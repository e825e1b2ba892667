"""The GGUF file format and safe file operations: reading and rewriting headers, splits, in-place changes.

Imports neither llama.cpp nor the command line; knows nothing of RoPE.
"""
