"""How well does a feature map phi separate object parts? Per-image k-means NMI on synthetic creatures.

For each of N synthetic test images (ground-truth part labels, ``partdisco.data.synthetic``), the features of
each source are upsampled to the image size (bilinear, as phi is in training), the foreground pixels (GT mask)
are clustered by k-means with K = the number of parts, and the NMI of the clusters with the part labels is
averaged over images (x100). Higher = the features alone already tell the parts apart, which is what L_f
(the within-part feature variance and the part descriptors) builds on. Sources: EfficientNet-Lite0 stages
(ImageNet weights of the installed package; stride 32 and the dilated stride-8 trunk), their
concatenations, the texture bank, plain Lab colour, and a random-init EfficientNet as a control.

    PYTHONPATH=src python benchmarks/bench_phi_parts.py --images 50 --size 128 --threads 2
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score

from partdisco.data.synthetic import generate_sample
from partdisco.imaging.color import rgb_to_lab
from partdisco.models.efficientnet import LITE_PREPROCESS, EfficientNetLite, load_efficientnet_lite
from partdisco.models.perceptual import TextureFeatures


def upsample(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=True)


def unit(x: torch.Tensor) -> torch.Tensor:
    """Scale a (1, C, H, W) map to unit mean per-pixel norm, so that concatenated maps weigh alike."""
    return x / x.norm(dim=1).mean().clamp_min(1e-8)


def nmi(features: torch.Tensor, labels: np.ndarray, k: int, seed: int, max_pixels: int) -> float:
    fg = labels > 0
    x = features[0].permute(1, 2, 0).numpy()[fg]  # (N_fg, C)
    y = labels[fg]
    if len(y) > max_pixels:  # a fixed random subset of the foreground keeps k-means cheap
        keep = np.random.default_rng(seed).choice(len(y), max_pixels, replace=False)
        x, y = x[keep], y[keep]
    pred = KMeans(k, n_init=2, random_state=seed).fit_predict(x)
    return 100.0 * normalized_mutual_info_score(y, pred)


COMBOS = (("stage3", "stage4"), ("stage2", "stage4"), ("stage3", "stage5"), ("stage2", "stage3", "stage4"))
# (net, single stages scored, combinations scored); stages 1-3 of os8 are the os32 maps.
PLAN = {
    "os32": (("stage1", "stage2", "stage3", "stage4", "stage5"), COMBOS),
    "os8": (("stage4", "stage5"), (COMBOS[0], COMBOS[2])),
    "random_os8": ((), (COMBOS[0],)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--parts", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-pixels", type=int, default=600)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    nets = {
        "os32": load_efficientnet_lite("lite0", include_top=False),
        "os8": load_efficientnet_lite("lite0", output_stride=8, include_top=False),
        "random_os8": EfficientNetLite("lite0", output_stride=8, include_top=False).eval(),
    }
    texture = TextureFeatures()
    start = time.time()
    scores: dict[str, list[float]] = {}
    seconds = dict.fromkeys(nets, 0.0)
    for index in range(args.images):
        sample = generate_sample(0, "test", index, args.size, args.parts)
        image = torch.from_numpy(sample["image"])[None]  # (1, 3, S, S)
        maps: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for name, net in nets.items():
                t0 = time.perf_counter()
                stages = net.forward_stages(LITE_PREPROCESS(image))  # native resolution
                seconds[name] += time.perf_counter() - t0
                singles, combos = PLAN[name]
                maps.update({f"{name}:{s}": upsample(stages[s], args.size) for s in singles})
                for combo in combos:
                    maps[f"{name}:{'+'.join(combo)}"] = torch.cat(
                        [unit(upsample(stages[s], args.size)) for s in combo], 1
                    )
            maps["texture"] = texture(image)
        maps["lab"] = rgb_to_lab(image)
        for name, m in maps.items():
            scores.setdefault(name, []).append(nmi(m, sample["parts"], args.parts, index, args.max_pixels))
        if (index + 1) % 10 == 0:  # partial results, in case the run is cut short
            best = sorted(scores, key=lambda n: -np.mean(scores[n]))[:3]
            print(f"{index + 1} images, {time.time() - start:.0f} s, best so far: {best}", flush=True)
    load = os.getloadavg()
    print(
        f"{args.images} synthetic test images, {args.size} px, K={args.parts}, threads={args.threads}, "
        f"{time.time() - start:.0f} s, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print("| features | FG-NMI (mean +- std over images) |")
    print("|---|---|")
    for name, values in sorted(scores.items(), key=lambda kv: -np.mean(kv[1])):
        print(f"| {name} | {np.mean(values):.1f} +- {np.std(values):.1f} |")
    for name, s in seconds.items():
        print(f"forward {name} (batch 1): {1000 * s / args.images:.0f} ms / image")


if __name__ == "__main__":
    main()
