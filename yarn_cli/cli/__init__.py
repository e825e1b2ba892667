"""The command-line layer: parse, call the library, render. Nothing else lives here."""
