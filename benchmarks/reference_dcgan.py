"""Plain DCGAN training loop, written the way pytorch/examples ``dcgan/main.py`` is.

This is the baseline gantool is measured against (see docs/performance.md), so it
deliberately keeps the example's choices: torchvision ``ImageFolder`` + ``DataLoader``
with 2 worker processes and per-sample PIL transforms (Resize, CenterCrop, ToTensor,
Normalize), sigmoid outputs with ``BCELoss``, Adam(2e-4, betas=(0.5, 0.999)),
``zero_grad()`` via ``netD.zero_grad()``, a real and a fake discriminator pass each
with its own backward, the fake generated once and reused for the G step, and
``.item()`` on every loss every step (the example prints them every step).

It does not import gantool. ``--image-size 28`` builds the MNIST-sized variant the
same way gantool's dcgan plugin does for 28 px (first transposed conv 1×1 → 7×7,
then two stride-2 ups; the discriminator mirrors it), with 1 channel.

Output: one JSON line with end-to-end images/s (wall time from the end of the
warm-up steps to the end of the last step, data loading included) and step-only
images/s (the summed time of the training steps alone, batches already in hand).

    python benchmarks/reference_dcgan.py --dataroot /tmp/jpegs --steps 40 --warmup 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.optim as optim
import torchvision.datasets as dset
import torchvision.transforms as transforms
from PIL import Image


def weights_init(m):
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class Generator(nn.Module):
    def __init__(self, nz, ngf, nc, image_size):
        super().__init__()
        if image_size == 64:
            self.main = nn.Sequential(
                nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
                nn.BatchNorm2d(ngf * 8),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ngf * 4),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ngf * 2),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ngf),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
                nn.Tanh(),
            )
        elif image_size == 28:
            self.main = nn.Sequential(
                nn.ConvTranspose2d(nz, ngf * 2, 7, 1, 0, bias=False),  # 1x1 -> 7x7
                nn.BatchNorm2d(ngf * 2),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),  # 14x14
                nn.BatchNorm2d(ngf),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),  # 28x28
                nn.Tanh(),
            )
        else:
            raise SystemExit("--image-size must be 64 or 28")
        self.nz = nz

    def sample_latent(self, n):
        return torch.randn(n, self.nz, 1, 1)

    def forward(self, input):
        return self.main(input)


class Discriminator(nn.Module):
    def __init__(self, ndf, nc, image_size):
        super().__init__()
        if image_size == 64:
            self.main = nn.Sequential(
                nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * 2),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * 4),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * 8),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
                nn.Sigmoid(),
            )
        else:
            self.main = nn.Sequential(
                nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),  # 14x14
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),  # 7x7
                nn.BatchNorm2d(ndf * 2),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 2, 1, 7, 1, 0, bias=False),  # 1x1
                nn.Sigmoid(),
            )

    def forward(self, input):
        return self.main(input).view(-1, 1).squeeze(1)


def gray_loader(path):
    with open(path, "rb") as f:
        return Image.open(f).convert("L")


def build(opt):
    nc = 3 if opt.image_size == 64 else 1
    netG = Generator(opt.nz, opt.ngf, nc, opt.image_size)
    netG.apply(weights_init)
    netD = Discriminator(opt.ndf, nc, opt.image_size)
    netD.apply(weights_init)
    return netG, netD, nc


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataroot", help="ImageFolder root (class sub-folders)")
    src.add_argument("--fake", type=int, metavar="N",
                     help="torchvision FakeData of N random PIL images instead of a folder")
    p.add_argument("--steps", type=int, default=50, help="measured steps (after warm-up)")
    p.add_argument("--warmup", type=int, default=5, help="steps not timed")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=64, choices=[64, 28])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--nz", type=int, default=100)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.0002)
    p.add_argument("--beta1", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="do not print per-step losses")
    p.add_argument("--device", default="cpu", help="cpu or cuda (the example's --cuda)")
    opt = p.parse_args(argv)

    random.seed(opt.seed)
    torch.manual_seed(opt.seed)
    device = torch.device(opt.device)

    netG, netD, nc = build(opt)
    netG.to(device)
    netD.to(device)
    norm = (0.5,) * nc
    transform = transforms.Compose([
        transforms.Resize(opt.image_size),
        transforms.CenterCrop(opt.image_size),
        transforms.ToTensor(),
        transforms.Normalize(norm, norm),
    ])
    if opt.fake:
        # pytorch/examples' `--dataset fake`: FakeData makes a random PIL image per sample.
        dataset = dset.FakeData(size=opt.fake, image_size=(nc, opt.image_size, opt.image_size),
                                transform=transform)
    else:
        dataset = dset.ImageFolder(root=opt.dataroot, transform=transform,
                                   **({"loader": gray_loader} if nc == 1 else {}))
    dataloader = torch.utils.data.DataLoader(dataset, batch_size=opt.batch_size,
                                             shuffle=True, num_workers=opt.workers)

    criterion = nn.BCELoss()
    real_label, fake_label = 1.0, 0.0
    optimizerD = optim.Adam(netD.parameters(), lr=opt.lr, betas=(opt.beta1, 0.999))
    optimizerG = optim.Adam(netG.parameters(), lr=opt.lr, betas=(opt.beta1, 0.999))

    total = opt.warmup + opt.steps
    step = 0
    step_time = 0.0
    images = 0
    t_start = time.perf_counter()
    while step < total:
        for data in dataloader:
            if step == opt.warmup:
                t_start = time.perf_counter()
                step_time, images = 0.0, 0
            t0 = time.perf_counter()
            ############################
            # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
            ###########################
            netD.zero_grad()
            real_cpu = data[0].to(device)
            batch_size = real_cpu.size(0)
            label = torch.full((batch_size,), real_label, dtype=real_cpu.dtype, device=device)
            output = netD(real_cpu)
            errD_real = criterion(output, label)
            errD_real.backward()
            D_x = output.mean().item()

            noise = torch.randn(batch_size, opt.nz, 1, 1, device=device)
            fake = netG(noise)
            label.fill_(fake_label)
            output = netD(fake.detach())
            errD_fake = criterion(output, label)
            errD_fake.backward()
            D_G_z1 = output.mean().item()
            errD = errD_real + errD_fake
            optimizerD.step()

            ############################
            # (2) Update G network: maximize log(D(G(z)))
            ###########################
            netG.zero_grad()
            label.fill_(real_label)
            output = netD(fake)
            errG = criterion(output, label)
            errG.backward()
            D_G_z2 = output.mean().item()
            optimizerG.step()

            msg = (f"[{step}/{total}] Loss_D: {errD.item():.4f} Loss_G: {errG.item():.4f} "
                   f"D(x): {D_x:.4f} D(G(z)): {D_G_z1:.4f} / {D_G_z2:.4f}")
            step_time += time.perf_counter() - t0
            images += batch_size
            if not opt.quiet:
                print(msg, file=sys.stderr)
            step += 1
            if step >= total:
                break
    wall = time.perf_counter() - t_start
    ru_self = resource.getrusage(resource.RUSAGE_SELF)
    ru_kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_gpu = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    print(json.dumps({
        "impl": "reference",
        "peak_gpu_mb": peak_gpu,
        "image_size": opt.image_size,
        "batch_size": opt.batch_size,
        "steps": opt.steps,
        "images_per_s": images / wall,
        "step_images_per_s": images / step_time,
        "wall_s": wall,
        "torch_threads": torch.get_num_threads(),
        "peak_rss_mb": ru_self.ru_maxrss / 1024,
        "peak_rss_workers_mb": ru_kids.ru_maxrss / 1024,
        "pid": os.getpid(),
    }))


if __name__ == "__main__":
    main()
