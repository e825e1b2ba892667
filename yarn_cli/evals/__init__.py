"""The evaluations: passkey retrieval and long-text perplexity, their lengths and their run records.

They run models through ``yarn_cli.llama`` and never import ``llama_cpp`` themselves.
"""
