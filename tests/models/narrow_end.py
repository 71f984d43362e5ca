"""Three strided conv stages and a 1x1 conv to three classes at the last stage's resolution, with
no upsampling: what the model returns is the classifier's output, not the encoder's last map."""

from torch import nn


class NarrowEnd(nn.Module):
    def __init__(self, in_chans: int = 4, width: int = 16, num_classes: int = 3) -> None:
        super().__init__()
        self.s1 = nn.Sequential(nn.Conv2d(in_chans, width, 3, 2, 1), nn.ReLU())
        self.s2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, 2, 1), nn.ReLU())
        self.s3 = nn.Sequential(nn.Conv2d(2 * width, 4 * width, 3, 2, 1), nn.ReLU())
        self.classify = nn.Conv2d(4 * width, num_classes, 1)

    def forward(self, x):
        return self.classify(self.s3(self.s2(self.s1(x))))
