"""Transports into federated-learning frameworks, over securefl's protocol core."""
