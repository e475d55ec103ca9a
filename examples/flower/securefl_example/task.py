"""securefl-example: the model, the data and the training loop (plain PyTorch, nothing of securefl).

A small MLP classifies scikit-learn's bundled 8x8 digits (1,797 images, no download); each node
trains on its own partition and evaluates on a shared held-out set."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def load_data(partition_id: int, num_partitions: int, batch_size: int = 32) -> tuple[DataLoader, DataLoader]:
    """This node's training partition and the shared test set (the last 297 images)."""
    images, labels = load_digits(return_X_y=True)
    images = torch.tensor(images / 16.0, dtype=torch.float32)
    labels = torch.tensor(labels)
    order = np.random.default_rng(42).permutation(1500)
    part = np.array_split(order, num_partitions)[partition_id]
    train = TensorDataset(images[part], labels[part])
    test = TensorDataset(images[1500:], labels[1500:])
    generator = torch.Generator().manual_seed(partition_id)
    return DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator), DataLoader(test, batch_size=256)


def train(model: Net, loader: DataLoader, epochs: int, lr: float) -> float:
    optimiser = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    total, batches = 0.0, 0
    for _ in range(epochs):
        for images, labels in loader:
            optimiser.zero_grad()
            loss = nn.functional.cross_entropy(model(images), labels)
            loss.backward()
            optimiser.step()
            total, batches = total + loss.item(), batches + 1
    return total / batches


def test(model: Net, loader: DataLoader) -> tuple[float, float]:
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for images, labels in loader:
            outputs = model(images)
            loss += nn.functional.cross_entropy(outputs, labels, reduction="sum").item()
            correct += (outputs.argmax(1) == labels).sum().item()
    return loss / len(loader.dataset), correct / len(loader.dataset)
