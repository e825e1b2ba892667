"""llama.cpp, through llama-cpp-python: loading with a scaling, threads, memory, sampling, chat, evaluation.

The only package that imports ``llama_cpp``.
"""
