"""Invoke namespaces, one module each; thin wrappers around the library in ``ops``."""
