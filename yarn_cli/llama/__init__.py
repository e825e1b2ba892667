"""llama.cpp, through llama-cpp-python: loading with a scaling, threads, memory, sampling, chat, evaluation.

The only package that imports ``llama_cpp``, and it does so first: on a CUDA build (llama-cpp-python
0.3.36, CUDA 13, numpy 2.5) every model load crashed with SIGSEGV when numpy's libraries had been
loaded before llama.cpp's, and worked the other way round. The command line imports this package
before anything that imports numpy; a program using yarn-cli as a library should import
``yarn_cli.llama`` (or ``llama_cpp``) before numpy, gguf or ``yarn_cli.model``.
"""

import sys

# Whether this process loaded numpy before llama.cpp: the loader warns about it on GPU builds.
NUMPY_LOADED_FIRST = "numpy" in sys.modules and "llama_cpp" not in sys.modules

import llama_cpp  # noqa: E402, F401  (llama.cpp's shared libraries, before numpy's)
