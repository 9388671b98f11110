"""ONNX export (``partdisco export RUN model.onnx``) and onnxruntime inference (issue #24, point 2)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.slow  # each export takes torch.export + onnxscript ~10 s

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from partdisco.cli import main  # noqa: E402
from partdisco.models import CheckpointError, ViTSegmenter, create_segmenter, export_checkpoint  # noqa: E402
from partdisco.models.onnx_model import METADATA_KEYS, OnnxSegmenter, export_onnx  # noqa: E402
from partdisco.models.segmenter import InferenceDefaults  # noqa: E402
from partdisco.models.vit import VisionTransformer, ViTSpec  # noqa: E402
from partdisco.models.vit_backbone import random_state_dict  # noqa: E402


def _vit(name: str, background_channel: bool) -> ViTSegmenter:
    spec = dataclasses.replace(ViTSpec.named(name, depth=1), pos_grid=4)  # 56 px images keep a 4 x 4 grid
    vit = VisionTransformer(spec)
    vit.load_state_dict(random_state_dict(spec, seed=3))
    return ViTSegmenter(vit, num_parts=3, background_channel=background_channel)


MODELS = {
    "resnet18-bg": lambda: create_segmenter("resnet18", num_parts=4, background_channel=True),
    "resnet18": lambda: create_segmenter("resnet18", num_parts=3),
    "vit-dinov2-bg": lambda: _vit("dinov2_vits14", background_channel=True),  # offset 0.1
    "vit-dinov2-reg": lambda: _vit("dinov2_vits14_reg", background_channel=False),  # offset 0, antialias
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def exported(request, tmp_path_factory):
    torch.manual_seed(0)
    seg = MODELS[request.param]().eval()
    seg.inference_defaults = InferenceDefaults(48, 0.1, (0.05, 0.002))
    path = export_onnx(seg, tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx")
    return seg, path, OnnxSegmenter(path)


# sizes: the traced example's, others, odd ones, batch 1 and 3, and (for the ViTs) the stored 4 x 4 grid
@pytest.mark.parametrize("shape", [(2, 3, 64, 80), (1, 3, 56, 56), (3, 3, 45, 71), (1, 3, 100, 33)])
def test_onnxruntime_logits_agree_with_pytorch(exported, shape):
    seg, _, onnx_model = exported
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = seg(x)
    got = onnx_model(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-4


def test_metadata_carries_what_segment_needs(exported):
    seg, path, model = exported
    import onnx

    proto = onnx.load(str(path))
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert {f"partdisco.{k}" for k in METADATA_KEYS} <= set(meta)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [18]
    assert (model.num_parts, model.background_channel) == (seg.num_parts, seg.background_channel)
    assert model.preprocess == seg.preprocess
    assert model.inference_defaults == InferenceDefaults(48, 0.1, (0.05, 0.002))
    assert model.input_multiple == (14 if isinstance(seg, ViTSegmenter) else 1)
    inputs = proto.graph.input[0].type.tensor_type.shape.dim
    assert all(d.dim_param for i, d in enumerate(inputs) if i != 1)  # batch, height, width are symbolic


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 56), (48, 48), (33, 70)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"img{i}.png")
    return root


def _outputs(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_export_cli_then_segment_with_onnx_writes_the_pytorch_files(tmp_path, photos):
    torch.manual_seed(0)  # a background channel: two passes (object crop), refinement, probabilities
    seg = create_segmenter("resnet18", num_parts=3, background_channel=True)
    ckpt = export_checkpoint(seg, tmp_path / "model.pt")
    assert main(["export", str(ckpt), str(tmp_path / "model.onnx")]) == 0
    args = ["--size", "48", "--quiet", "--device", "cpu", "--save-probs"]
    assert main(["segment", str(ckpt), str(photos), "--out", str(tmp_path / "a" / "parts"), *args]) == 0
    onnx_file = str(tmp_path / "model.onnx")
    assert main(["segment", onnx_file, str(photos), "--out", str(tmp_path / "b" / "parts"), *args]) == 0
    torch_files, onnx_files = _outputs(tmp_path / "a" / "parts"), _outputs(tmp_path / "b" / "parts")
    assert sorted(torch_files) == sorted(onnx_files)
    for name in torch_files:
        if name.startswith(("labels/", "color/", "input/")):
            assert torch_files[name] == onnx_files[name], name
    for name in [n for n in torch_files if n.startswith("probs/")]:
        a = np.load(tmp_path / "a" / "parts" / name)["probs"].astype(np.float32)
        b = np.load(tmp_path / "b" / "parts" / name)["probs"].astype(np.float32)
        assert np.abs(a - b).max() < 2e-3  # float16 files: one step of rounding
    a, b = (json.loads(torch_files["parts.json"]), json.loads(onnx_files["parts.json"]))
    assert a["images"] == b["images"]
    assert {k: v for k, v in a["settings"].items() if k not in ("checkpoint", "weights")} == {
        k: v for k, v in b["settings"].items() if k not in ("checkpoint", "weights")
    }


def test_export_refuses_fp16_for_onnx_and_opset_for_pt(tmp_path, capsys):
    ckpt = export_checkpoint(create_segmenter("resnet18", num_parts=2), tmp_path / "m.pt")
    assert main(["export", str(ckpt), str(tmp_path / "m.onnx"), "--fp16"]) == 2
    assert "--fp16" in capsys.readouterr().err
    assert main(["export", str(ckpt), str(tmp_path / "copy.pt"), "--opset", "17"]) == 2
    assert "--opset" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "copy.pt").exists()


def test_an_onnx_file_without_our_metadata_is_refused_by_name(tmp_path):
    import onnx

    path = tmp_path / "foreign.onnx"
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["image"], ["logits"])],
        "foreign",
        [onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)]), str(path))
    with pytest.raises(CheckpointError, match="foreign.onnx.*metadata"):
        OnnxSegmenter(path)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="junk.onnx.*not a readable ONNX model"):
        OnnxSegmenter(tmp_path / "junk.onnx")
