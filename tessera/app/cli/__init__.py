"""The ``tessera`` command line: ``main`` builds the parser; one module per command family."""
