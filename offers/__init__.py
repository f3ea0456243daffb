"""The ``offers`` command line: the one layer allowed to import every package."""
