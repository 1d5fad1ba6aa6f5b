"""Six small sample architectures for the 8x8 digits, each taking (N, 1, 8, 8) float32.

They are deliberately plain (named submodules, no functional activations) so pruning
tools and the app can walk and display them layer by layer.
"""

from __future__ import annotations

from torch import Tensor, nn

NUM_CLASSES = 10


class DigitsMLP(nn.Module):
    """Fully connected classifier: 64 -> 128 -> 64 -> 10 with ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64, 128)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(128, 64)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(64, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (N, 10) for images (N, 1, 8, 8)."""
        x = self.relu1(self.fc1(self.flatten(x)))
        x = self.relu2(self.fc2(x))
        logits: Tensor = self.fc3(x)
        return logits


class DigitsCNN(nn.Module):
    """Two conv + max-pool stages and a linear classifier (the product brief's example)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64 * 2 * 2, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (N, 10) for images (N, 1, 8, 8)."""
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        logits: Tensor = self.fc(self.flatten(x))
        return logits


class DigitsTeachCNN(nn.Module):
    """Two conv-BN-ReLU stages with channel dropout, a global max-pool and a 64 -> 10 classifier.

    Made for lessons: channel dropout (Dropout2d) spreads what the model knows across its
    filters, so one-shot filter pruning costs accuracy gradually; the first conv (9 weights
    a filter) and the small classifier stay more sensitive than the wide middle conv.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.drop1 = nn.Dropout2d(0.3)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(4)
        self.drop2 = nn.Dropout2d(0.3)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (N, 10) for images (N, 1, 8, 8)."""
        x = self.drop1(self.pool1(self.relu1(self.bn1(self.conv1(x)))))
        x = self.drop2(self.pool2(self.relu2(self.bn2(self.conv2(x)))))
        logits: Tensor = self.fc(self.flatten(x))
        return logits


class ConvBNReLU(nn.Module):
    """A bias-free 3x3 convolution followed by BatchNorm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """conv -> BN -> ReLU."""
        out: Tensor = self.relu(self.bn(self.conv(x)))
        return out


class BasicBlock(nn.Module):
    """Residual block: conv3x3-BN-ReLU-conv3x3-BN plus a shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """Residual output, same width as `out_channels`, spatially divided by `stride`."""
        out: Tensor = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = self.relu2(out + self.shortcut(x))
        return out


class DigitsResNet(nn.Module):
    """Small ResNet: 2x bilinear upscale to 16x16, stem, three BasicBlocks (16/32/64)."""

    def __init__(self) -> None:
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.stem = ConvBNReLU(1, 16)
        self.layer1 = BasicBlock(16, 16, stride=1)
        self.layer2 = BasicBlock(16, 32, stride=2)
        self.layer3 = BasicBlock(32, 64, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (N, 10) for images (N, 1, 8, 8)."""
        x = self.stem(self.upsample(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        logits: Tensor = self.fc(self.flatten(self.pool(x)))
        return logits


class DigitsLSTM(nn.Module):
    """Reads the image row by row (8 steps of 8 pixels) with an LSTM; classifies the last state."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size=8, hidden_size=64, batch_first=True)
        self.fc = nn.Linear(64, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (N, 10) for images (N, 1, 8, 8)."""
        rows = x.reshape(x.shape[0], 8, 8)
        out, _ = self.lstm(rows)
        last: Tensor = out[:, -1, :]
        logits: Tensor = self.fc(last)
        return logits


class DigitsAutoencoder(nn.Module):
    """Convolutional autoencoder: 8x8 -> 32x2x2 code -> 8x8 reconstruction in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(32, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(16, 1, kernel_size=3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction (N, 1, 8, 8) of images (N, 1, 8, 8)."""
        decoded: Tensor = self.decoder(self.encoder(x))
        return decoded


__all__ = [
    "BasicBlock",
    "ConvBNReLU",
    "DigitsAutoencoder",
    "DigitsCNN",
    "DigitsLSTM",
    "DigitsMLP",
    "DigitsResNet",
    "DigitsTeachCNN",
]
