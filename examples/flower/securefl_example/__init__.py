"""securefl-example: Flower's PyTorch quickstart with securefl's secure aggregation."""
