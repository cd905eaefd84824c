"""The ONNX model contract: an OpenFIBSEM-shaped plain export (built here with onnx's helper
API and random weights) loads unchanged and gives the argmax of its logits; bad input is
refused with a message naming it."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fibsem_ophyd.detection import (
    SHIPPED_MODEL,
    detect_features,
    load_model,
)


def _openfibsem_like(path, classes=6, h=1024, w=1536, seed=0):
    """A 1x1-convolution 'segmentation' model with OpenFIBSEM's export shapes: input
    ``input`` float32 [N, 1, 1024, 1536] (only N free), output ``output`` [N, C, H, W]."""
    rng = np.random.default_rng(seed)
    wts = rng.normal(size=(classes, 1, 1, 1)).astype(np.float32)
    bias = rng.normal(size=classes).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "W", "B"], ["output"])],
        "openfibsem_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, h, w])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", classes, h, w])],
        initializer=[numpy_helper.from_array(wts, "W"), numpy_helper.from_array(bias, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return wts[:, 0, 0, 0], bias


def test_openfibsem_export_loads_and_segments(tmp_path):
    path = tmp_path / "autolamella-like.onnx"
    w, b = _openfibsem_like(path)
    model = load_model(path)
    assert model.num_classes == 6 and model.input_size == (1024, 1536)
    img = np.random.default_rng(1).integers(0, 256, (1024, 1536), dtype=np.uint8)
    mask = model.inference(img)
    # the contract: logits of grey / 255, class = argmax over C
    expect = np.argmax(w[:, None, None] * (img.astype(np.float32) / 255)[None] + b[:, None, None],
                       axis=0)
    assert mask.shape == img.shape and mask.dtype == np.uint8
    assert np.array_equal(mask, expect)
    rgb = model.inference(img, rgb=True)
    assert rgb.shape == (1024, 1536, 3)


def test_fixed_size_model_resizes_other_frames(tmp_path):
    path = tmp_path / "m.onnx"
    w, b = _openfibsem_like(path, h=64, w=96)
    model = load_model(path)
    img = np.zeros((128, 192), dtype=np.uint8)
    img[:, 96:] = 255                    # right half white: its class is argmax(w + b)
    mask = model.inference(img)
    assert mask.shape == (128, 192)
    assert (mask[:, :96] == np.argmax(b)).all()
    assert (mask[:, 96:] == np.argmax(w + b)).all()


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no segmentation model file at .*nope.onnx"):
        load_model(tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model")
    with pytest.raises(ValueError, match="junk.onnx.* is not a loadable ONNX model"):
        load_model(junk)


def test_bad_images(tmp_path):
    path = tmp_path / "m.onnx"
    _openfibsem_like(path, h=32, w=48)
    model = load_model(path)
    with pytest.raises(ValueError, match="must be uint8.*float64"):
        model.inference(np.zeros((32, 48)))
    with pytest.raises(ValueError, match=r"must be 2-D.*\(32, 48, 3\)"):
        model.inference(np.zeros((32, 48, 3), dtype=np.uint8))


def test_class_count_and_feature_names(tmp_path):
    path = tmp_path / "three.onnx"
    _openfibsem_like(path, classes=3, h=32, w=48)
    model = load_model(path)
    img = np.zeros((32, 48), dtype=np.uint8)
    with pytest.raises(ValueError, match="has 3 classes; feature LandingPost needs class 3"):
        detect_features(img, model, ["NeedleTip", "LandingPost"], 1e-8)
    with pytest.raises(ValueError, match="unknown feature 'NeedleTop'"):
        detect_features(img, model, ["NeedleTop"], 1e-8)
    det = detect_features(img, model, ["NeedleTip", "LamellaCentre"], 1e-8)
    assert [f.name for f in det.features] == ["NeedleTip", "LamellaCentre"]


def test_shipped_model_is_small_and_follows_the_contract():
    assert SHIPPED_MODEL.is_file()
    assert SHIPPED_MODEL.stat().st_size <= 5e6
    model = load_model()
    assert model.num_classes == 6
    m = onnx.load(str(SHIPPED_MODEL))
    assert [i.name for i in m.graph.input] == ["input"]
    assert [o.name for o in m.graph.output] == ["output"]
    mask = model.inference(np.full((1024, 1536), 90, dtype=np.uint8))
    assert mask.shape == (1024, 1536)


def _free_size_with_width(path, width, classes=6):
    """A 1x1-convolution model with free H, W that names its working width in its metadata,
    like the shipped model; class k wins where grey / 255 is nearest (k + 0.5) / classes
    (logits 2 c_k g - c_k^2 = -(g - c_k)^2 + g^2)."""
    centres = (np.arange(classes) + 0.5) / classes
    wts = (2 * centres).astype(np.float32).reshape(classes, 1, 1, 1)
    bias = (-centres ** 2).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "W", "B"], ["output"])], "free",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", classes, "H", "W"])],
        initializer=[numpy_helper.from_array(wts, "W"), numpy_helper.from_array(bias, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    prop = model.metadata_props.add()
    prop.key, prop.value = "fibsem_ophyd.input_width", str(width)
    onnx.save(model, str(path))
    return wts[:, 0, 0, 0], bias


@pytest.mark.parametrize(("shape", "width", "f"), [((1024, 1536), 768, 2),
                                                   ((1001, 1535), 384, 4)])
def test_working_width_mask_is_argmax_of_bilinear_logits(tmp_path, shape, width, f):
    """A frame is block-averaged f x f to the working width; the mask at full size is the
    argmax of the logits interpolated bilinearly at each pixel centre (computed by scipy here
    over the whole frame; the model computes it only next to class boundaries)."""
    from scipy import ndimage

    path = tmp_path / "free.onnx"
    w, b = _free_size_with_width(path, width)
    model = load_model(path)
    assert model.input_size is None and model.input_width == width
    rng = np.random.default_rng(3)
    # smooth regions and sharp edges, so that there are blocks inside and on boundaries
    img = ndimage.zoom(rng.integers(0, 256, (8, 12)).astype(float), 128, order=0)
    img = (img[:shape[0], :shape[1]] + rng.normal(0, 20, shape)).clip(0, 255).astype(np.uint8)
    mask = model.inference(img)
    h, wd = shape
    padded = np.pad(img, ((0, -h % f), (0, -wd % f)), mode="edge").astype(np.float64)
    small = padded.reshape(padded.shape[0] // f, f, padded.shape[1] // f, f).mean(axis=(1, 3))
    logits = w[:, None, None] * (small / 255)[None] + b[:, None, None]
    rows, cols = np.mgrid[0:h, 0:wd]
    ys = np.clip((rows + 0.5) / f - 0.5, 0, small.shape[0] - 1)
    xs = np.clip((cols + 0.5) / f - 0.5, 0, small.shape[1] - 1)
    full = np.stack([ndimage.map_coordinates(c, [ys, xs], order=1) for c in logits])
    expect = np.argmax(full, axis=0)
    assert mask.shape == shape
    # float32 (model) against float64 (here): only exact ties may differ
    assert np.mean(mask != expect) < 1e-4
    nearest = np.repeat(np.repeat(np.argmax(logits, axis=0), f, 0), f, 1)[:h, :wd]
    assert (mask != nearest).sum() > 100        # the refinement does move boundaries
