"""Constructs, one per concern, each configured by a small frozen dataclass."""
