"""The command-line layer: parse, call the library, render. Nothing else lives here."""

# llama.cpp's libraries load before numpy's, whichever command runs: see yarn_cli.llama.
import yarn_cli.llama  # noqa: F401
