import torch
from torch import nn

from partdisco.config import EvalConfig
from partdisco.data import PartsDataset
from partdisco.engine.evaluate import evaluate, iterate_batches


class LabelImages(PartsDataset):
    """Images whose red channel encodes the GT part (1..3), background 0; one keypoint per part."""

    part_names = ["a", "b", "c"]
    keypoint_names = ["ka", "kb", "kc"]
    has_masks = True

    def __init__(self, n=6, size=12, sizes=None):
        super().__init__()
        self.n, self.size, self.sizes = n, size, sizes

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        s = self.sizes[i] if self.sizes else self.size
        parts = torch.zeros(s, s, dtype=torch.long)
        g = torch.Generator().manual_seed(i)
        perm = torch.randperm(3, generator=g) + 1
        parts[2:5, 2:10] = perm[0]
        parts[5:8, 2:10] = perm[1]
        parts[8:10, 2:10] = perm[2]
        image = torch.zeros(3, s, s)
        image[0] = parts.float() / 4
        kps = torch.zeros(3, 3)
        for k in range(3):
            ys, xs = torch.nonzero(parts == k + 1, as_tuple=True)
            kps[k] = torch.tensor([xs[0] + 0.5, ys[0] + 0.5, 1.0])
        return {
            "image": image,
            "fg_mask": (parts > 0).float()[None],
            "parts": parts,
            "keypoints": kps,
            "bbox": torch.tensor([2.0, 2.0, 10.0, 10.0]),
            "class_id": torch.tensor(0),
            "index": torch.tensor(i),
            "name": f"img{i}",
        }


class Oracle(nn.Module):
    """Reads the part off the red channel; part k of the model = GT part perm[k]."""

    num_parts = 3
    background_channel = False

    def __init__(self, perm=(1, 2, 0)):
        super().__init__()
        self.perm = perm

    @staticmethod
    def preprocess(x):
        return x

    def forward(self, x):
        label = x[:, 0] * 4  # (B, H, W) in 0..3
        return torch.stack([-(label - (self.perm[k] + 1)).abs() * 10 for k in range(3)], 1)


def test_oracle_scores_100_with_permuted_labels():
    m = evaluate(Oracle(), LabelImages(), EvalConfig(batch_size=4), torch.device("cpu"))
    assert m["images"] == 6 and m["keypoints_used"] == 18
    for key in ("kp_fg_nmi", "kp_fg_ari", "px_fg_nmi", "px_fg_ari", "px_nmi", "px_ari", "kp_nmi", "miou"):
        assert abs(m[key] - 100.0) < 1e-6, key
    assert m["miou_matching"]["matching"] == {"a": 2, "b": 0, "c": 1}
    base = m["baseline_xy_kmeans"]
    assert base["px_fg_nmi"] < 60  # parts are shuffled per image: position alone cannot explain them


def test_full_protocol_is_named_by_what_the_data_set_declares():
    """No published Full protocol (None): the data set's own masks; "" = the published CUB one."""
    plain = evaluate(Oracle(), LabelImages(), EvalConfig(baseline=False), torch.device("cpu"))
    assert "background from this data set's foreground mask" in plain["protocol"]["full"]
    assert "kp_nmi" in plain and "kp_nmi_bbox_gtmask" not in plain
    published = LabelImages()
    published.full_metrics_suffix = ""
    m = evaluate(Oracle(), published, EvalConfig(baseline=False), torch.device("cpu"))
    assert "published CUB Full protocol" in m["protocol"]["full"]
    variant = LabelImages()
    variant.full_metrics_suffix = "_bbox_gtmask"
    m = evaluate(Oracle(), variant, EvalConfig(baseline=False), torch.device("cpu"))
    assert "kp_nmi_bbox_gtmask" in m and "kp_nmi" not in m
    assert "not the published Full protocol" in m["protocol"]["full"]


def test_constant_model_scores_zero():
    class Constant(Oracle):
        def forward(self, x):
            out = torch.zeros(x.shape[0], 3, *x.shape[-2:])
            out[:, 1] = 1
            return out

    m = evaluate(Constant(), LabelImages(), EvalConfig(baseline=False), torch.device("cpu"))
    assert abs(m["px_fg_nmi"]) < 1e-9 and abs(m["kp_fg_ari"]) < 1e-9
    assert "baseline_xy_kmeans" not in m


def test_deterministic_and_regression():
    ds = LabelImages()
    a = evaluate(Oracle(), ds, EvalConfig(), torch.device("cpu"), regression_dataset=LabelImages(n=8))
    b = evaluate(Oracle(), ds, EvalConfig(), torch.device("cpu"), regression_dataset=LabelImages(n=8))
    assert a == b
    assert a["kp_regression_error"] > 0  # keypoints at a corner of bands of different heights: not linear


class CentroidKeypoints(LabelImages):
    """Keypoint k sits at the centroid of GT part k: a linear function of the parts' centroids."""

    def __getitem__(self, i):
        sample = super().__getitem__(i)
        for k in range(3):
            ys, xs = torch.nonzero(sample["parts"] == k + 1, as_tuple=True)
            sample["keypoints"][k] = torch.tensor([xs.float().mean() + 0.5, ys.float().mean() + 0.5, 1.0])
        return sample


def test_regression_error_is_zero_when_parts_give_the_keypoints():
    cfg = EvalConfig(baseline=False)
    exact = evaluate(
        Oracle(), CentroidKeypoints(), cfg, torch.device("cpu"), regression_dataset=CentroidKeypoints(n=8)
    )
    assert exact["kp_regression_error"] < 1e-3  # x100: a thousandth of a percent of the box

    class Constant(Oracle):
        def forward(self, x):
            out = torch.zeros(x.shape[0], 3, *x.shape[-2:])
            out[:, 1] = 1
            return out

    blind = evaluate(
        Constant(), CentroidKeypoints(), cfg, torch.device("cpu"), regression_dataset=CentroidKeypoints(n=8)
    )
    assert blind["kp_regression_error"] > 5.0  # the bands move from image to image: a few % of the box


def test_variable_sizes_batch_separately():
    ds = LabelImages(n=5, sizes=[12, 12, 16, 16, 12])
    sizes = [tuple(b["image"].shape) for b in iterate_batches(ds, 8)]
    assert sizes == [(2, 3, 12, 12), (2, 3, 16, 16), (1, 3, 12, 12)]
    m = evaluate(Oracle(), ds, EvalConfig(), torch.device("cpu"))
    assert m["images"] == 5 and abs(m["px_fg_nmi"] - 100) < 1e-6
