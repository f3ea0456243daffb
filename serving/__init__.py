"""Decision engine, API, batch scoring and stores.

Imports from ``features`` and ``models``; never from ``training``.
"""
