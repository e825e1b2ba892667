"""The RoPE domain: frequency math, the metadata keys, scalings, and a model's RoPE state.

Imports neither llama.cpp nor the command line.
"""
