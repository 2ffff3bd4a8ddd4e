"""The trace explorer's reads: filtered span and trace lists, trace detail, filter values."""
