"""Evaluators shared by tasks: metrics over a held-out stream, and their console tables."""
