"""The command line's commands, one module per kind of work; `__main__` puts them together."""
