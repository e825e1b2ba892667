"""Safe file output, whatever is written: nothing half-written, no input replaced, no device clobbered,
no file changed under a process that maps it.

The ground floor: the GGUF writer, run records, the Modelfile and saved conversations all write
through it, and it knows nothing of what they hold.
"""
