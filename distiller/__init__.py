"""domain-distiller: turn a domain's text, or its name, into training data and adapted retrieval models."""

__version__ = "0.1.0"
