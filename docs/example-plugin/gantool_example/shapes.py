"""Synthetic images of filled squares and discs: a dataset that needs no download."""

from typing import Annotated

import torch

import gantool


class Shapes(gantool.Dataset):
    """Random white squares and discs on black, in memory, labelled "square" (0) or "disc" (1).

    Args:
        size: number of images
        image_size: height and width in pixels
        seed: the images depend only on this seed
    """

    def __init__(self, *, size: Annotated[int, gantool.Range(ge=1)] = 1024,
                 image_size: Annotated[int, gantool.Range(ge=8)] = 16, seed: int = 0):
        if image_size % 4:
            raise gantool.ParamError("image_size", f"{image_size} is not a multiple of 4; use e.g. 16 or 32")
        g = torch.Generator().manual_seed(seed)
        ys, xs = torch.meshgrid(torch.arange(image_size), torch.arange(image_size), indexing="ij")
        centre = torch.randint(image_size // 4, 3 * image_size // 4, (size, 2), generator=g)
        radius = torch.randint(2, image_size // 4 + 1, (size,), generator=g)
        dy, dx = ys - centre[:, 0, None, None], xs - centre[:, 1, None, None]
        r = radius[:, None, None]
        disc = dy**2 + dx**2 <= r**2
        square = (dy.abs() <= r) & (dx.abs() <= r)
        is_disc = (torch.rand(size, generator=g) < 0.5)[:, None, None]
        self.images = (torch.where(is_disc, disc, square).to(torch.uint8) * 255).unsqueeze(1)
        self.image_shape = (1, image_size, image_size)
        self.shape_labels = is_disc.view(-1).long()
        self.num_classes, self.class_names = 2, ["square", "disc"]  # used only in conditional runs

    def as_tensor(self):
        return self.images

    def labels(self):
        return self.shape_labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index].float() / 127.5 - 1


class BrightnessGap(gantool.Metric):
    """Absolute difference between the mean pixel value of generated and real images.

    Not a quality metric, a sanity check: a generator stuck on black or white shows it at once.

    Args:
        seed: seed of the latents (its own generator: metrics never touch the global RNG)
    """

    goals = {"brightness_gap": "min"}

    def __init__(self, *, seed: int = 0):
        self.seed = seed
        self.protocol = {"feature": "mean pixel value", "seed": seed}

    def compute(self, generator, dataset, *, n, device):
        z = generator.sample_latent(n, generator=torch.Generator().manual_seed(self.seed)).to(device)
        labels = torch.arange(n, device=device) % generator.num_classes if generator.num_classes else None
        fake = (generator(z) if labels is None else generator(z, labels)).float().mean().item()
        n_real = min(n, len(dataset))
        images = dataset.as_tensor()
        if images is not None:
            real = (images[:n_real].float() / 127.5 - 1).mean().item()
        else:
            real = torch.stack([dataset[i] for i in range(n_real)]).mean().item()
        self.protocol = {**self.protocol, "n_fake": n, "n_real": n_real}
        return {"brightness_gap": abs(fake - real)}
