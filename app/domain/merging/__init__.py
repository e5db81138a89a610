"""Merge methods. See base.py for the contract and registry.py for the list of methods."""
