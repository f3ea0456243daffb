"""Affinity (collaborative filtering) and uplift models, and their packaging.

Imports only from ``features``.
"""
