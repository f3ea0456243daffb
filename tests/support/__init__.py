"""Helpers shared by the tests: builders of tiny data and launchers of real servers.

No tests and no fixtures live here; fixtures are in the ``conftest.py`` of each test folder
(``tests/conftest.py`` for both tiers, ``tests/unit`` and ``tests/integration`` for their own),
and a test module never imports another test module.
"""
