"""Precision lowering on tiny hand-built FCN-shaped ONNX graphs and synthetic images (ORT quantization tool style)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from fcn_deploy.calibration import cache as calib_cache
from fcn_deploy.calibration import ranges
from fcn_deploy.calibration.api import QuantizeConfig, quantize
from fcn_deploy.calibration.images import from_folder, stratified_order
from fcn_deploy.core.card import ModelCard, OutputSpec
from fcn_deploy.core.errors import FcnDeployError


def tiny_fcn(path: Path, num_classes: int = 3, card: bool = True, seed: int = 0, big_scale: float = 1.0) -> Path:
    """conv-relu, maxpool, conv-relu, 1x1 score, ConvTranspose x2 upsampling, skip Add, ArgMax: an FCN in miniature.

    `big_scale` multiplies the deep weights so activations grow past FP16-safe values.
    """
    rng = np.random.default_rng(seed)

    def w(name, *shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    c = num_classes
    inits = [
        w("c1.w", 8, 3, 3, 3), w("c1.b", 8, scale=0.1),
        w("c2.w", 8, 8, 3, 3, scale=0.3 * big_scale), w("c2.b", 8, scale=0.1),
        w("s.w", c, 8, 1, 1), w("s.b", c, scale=0.1),
        w("skip.w", c, 8, 1, 1), w("skip.b", c, scale=0.1),
        w("up.w", c, c, 4, 4, scale=0.2),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "c1.w", "c1.b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "c2.w", "c2.b"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "s.w", "s.b"], ["score"], name="score"),
        helper.make_node("ConvTranspose", ["score", "up.w"], ["up"], name="upscore", strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["r1", "skip.w", "skip.b"], ["skip"], name="score_skip"),
        helper.make_node("Add", ["up", "skip"], ["fuse"], name="fuse"),
        helper.make_node("ArgMax", ["fuse"], ["labels"], name="argmax", axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "tiny_fcn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("labels", TensorProto.INT64, ["N", "H", "W"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    if card:
        ModelCard.default("fcn8s", num_classes, outputs=(OutputSpec("labels", "labels"),),
                          min_shape=(16, 16), opt_shape=(32, 48), max_shape=(64, 64)).attach(model)
    onnx.save(model, str(path))
    return path


def write_images(folder: Path, n: int, size=(40, 56), seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = (rng.random((*size, 3)) * 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img{i:03d}.png")
    return folder


def nodes_of(model, op_type):
    return [n for n in model.graph.node if n.op_type == op_type]


def run(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"image": x})[0]


@pytest.fixture
def setup(tmp_path):
    return tiny_fcn(tmp_path / "m.onnx"), write_images(tmp_path / "calib", 8)


def cfg(model, calib, **kw) -> QuantizeConfig:
    kw.setdefault("precision", "int8")
    kw.setdefault("latency_runs", 1)
    return QuantizeConfig(model=model, calib_data=calib, **kw)


# --- INT8, TensorRT flavour ------------------------------------------------------------------------------------
def test_int8_tensorrt_symmetric_per_channel_qdq_on_every_conv_input(setup):
    model_path, calib = setup
    result = quantize(cfg(model_path, calib, method="minmax", float_ends=False))
    assert result.output == model_path.with_name("m.int8.onnx") and result.output.is_file()
    q = onnx.load(str(result.output))
    onnx.checker.check_model(q)  # topologically sorted, valid: what TensorRT's parser needs
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    # every zero point of every Q/DQ is 0 and int8
    for node in nodes_of(q, "QuantizeLinear") + nodes_of(q, "DequantizeLinear"):
        zp = inits[node.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), node.name
    produced_by_dq = {n.output[0]: n for n in nodes_of(q, "DequantizeLinear")}
    for node in nodes_of(q, "Conv") + nodes_of(q, "ConvTranspose"):
        act, weight = node.input[0], node.input[1]
        assert act in produced_by_dq, f"{node.name}: activation input has no Q/DQ"
        wdq = produced_by_dq[weight]
        scale = inits[wdq.input[1]]
        axis = helper.get_attribute_value(next(a for a in wdq.attribute if a.name == "axis"))
        # axis 0 for Conv (output channel) and for ConvTranspose (its input channel): TensorRT's deconvolution
        # kernels take no per-output-channel scales (NVIDIA/TensorRT#2380; issue 12 defect 2)
        assert axis == 0, node.name
        assert scale.shape == (inits[wdq.input[0]].shape[0],)
        assert inits[wdq.input[0]].dtype == np.int8
        assert np.abs(inits[wdq.input[0]].astype(int)).max() == 127  # full 8-bit weights for TensorRT
        if len(node.input) > 2:  # no int32 bias Q/DQ for TensorRT
            assert node.input[2] not in produced_by_dq and node.input[2] in inits
            assert inits[node.input[2]].dtype == np.float32
    # activations: one scale per tensor
    for node in nodes_of(q, "QuantizeLinear"):
        assert inits[node.input[1]].size == 1
    # one Add input is quantized (the upsampled one); the Conv branch stays float so TensorRT fuses Conv + Add
    # (NVIDIA's Q/DQ placement guide); no Q/DQ on Conv outputs or on the network output
    fuse = next(n for n in q.graph.node if n.name == "fuse")
    assert [i in produced_by_dq for i in fuse.input] == [True, False]
    assert "labels" not in produced_by_dq and "fuse" not in {n.input[0] for n in nodes_of(q, "QuantizeLinear")}
    card = ModelCard.from_onnx(q)
    assert card.precision == "int8"
    lowering = card.provenance["lowering"]
    assert lowering["method"] == "minmax" and lowering["num_images"] == 8 and lowering["target"] == "tensorrt"
    assert lowering["shapes"] == [[32, 48]] and len(lowering["cache_key"]) == 64
    summary = json.loads(result.summary_path.read_text())
    assert result.summary_path == model_path.with_name("m.int8.json")
    assert 0.5 <= summary["pixel_agreement"] <= 1.0 and summary["latency_ratio"] > 0


def test_int8_matches_fp32_closely(setup):
    model_path, calib = setup
    out = quantize(cfg(model_path, calib, method="minmax", output=model_path.with_name("q.onnx"))).output
    x = np.random.default_rng(3).random((1, 3, 32, 48)).astype(np.float32) * 4 - 2
    agreement = (run(model_path, x) == run(out, x)).mean()
    assert agreement > 0.9


def test_exclude_keeps_op_type_and_node_in_float(setup):
    model_path, calib = setup
    out = quantize(cfg(model_path, calib, exclude=("ConvTranspose", "conv2"), float_ends=False)).output
    q = onnx.load(str(out))
    produced_by_dq = {n.output[0] for n in nodes_of(q, "DequantizeLinear")}
    for node in q.graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            excluded = node.op_type == "ConvTranspose" or node.name == "conv2"
            assert (node.input[1] in produced_by_dq) != excluded, node.name
    assert ModelCard.from_onnx(q).provenance["lowering"]["excluded_nodes"] == ["conv2", "upscore"]


def test_excluding_every_conv_is_refused(setup, tmp_path):
    model_path, calib = setup
    out = tmp_path / "all_float.onnx"
    with pytest.raises(FcnDeployError, match="nothing would be quantized"):
        quantize(cfg(model_path, calib, exclude=("Conv", "ConvTranspose"), output=out))
    assert not out.exists()


@pytest.mark.parametrize("target", ["tensorrt", "onnxruntime"])
def test_float_ends_by_default(setup, target):
    """The conv on the raw image and the head from the last Conv (the score layer: the whole decoder) to ArgMax stay
    FP32 unless asked."""
    model_path, calib = setup
    kept = {"conv1", "score", "upscore", "fuse", "argmax"}
    for float_ends in (True, False):
        out = quantize(cfg(model_path, calib, target=target, float_ends=float_ends,
                           output=model_path.with_name(f"{target}{float_ends}.onnx"))).output
        q = onnx.load(str(out))
        produced_by_dq = {n.output[0] for n in nodes_of(q, "DequantizeLinear")}
        for node in q.graph.node:
            if node.name in ("conv1", "conv2", "score", "upscore"):  # weights: DQ'd exactly when quantized
                assert (node.input[1] in produced_by_dq) != (float_ends and node.name in kept), node.name
        argmax = next(n for n in q.graph.node if n.name == "argmax")
        assert (argmax.input[0] in produced_by_dq) == (target == "onnxruntime" and not float_ends)
        excluded = ModelCard.from_onnx(q).provenance["lowering"]["excluded_nodes"]
        assert excluded == (sorted(kept) if float_ends else [])


def test_onnxruntime_target_is_u8s8(setup):
    model_path, calib = setup
    out = quantize(cfg(model_path, calib, target="onnxruntime", weight_bits=7,  # what a CPU without VNNI gets
                       output=model_path.with_name("ort.onnx"))).output
    q = onnx.load(str(out))
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    act_types = {inits[n.input[2]].dtype for n in nodes_of(q, "QuantizeLinear")}
    assert act_types == {np.dtype(np.uint8)}
    conv = next(n for n in q.graph.node if n.name == "conv2")
    wdq = next(n for n in nodes_of(q, "DequantizeLinear") if n.output[0] == conv.input[1])
    assert inits[wdq.input[0]].dtype == np.int8 and not inits[wdq.input[2]].any()
    # 7-bit weights: U8S8 kernels without VNNI saturate int16 pair sums with full-range weights
    assert np.abs(inits[wdq.input[0]].astype(int)).max() <= 64
    assert ModelCard.from_onnx(q).provenance["lowering"]["weight_bits"] == 7


# --- calibration cache ------------------------------------------------------------------------------------------
def test_cache_hit_skips_calibration_and_changed_input_is_refused(setup, tmp_path, monkeypatch):
    model_path, calib = setup
    calls = []
    real = ranges.collect_ranges

    def counting(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(ranges, "collect_ranges", counting)
    cache = tmp_path / "calib.json"
    first = quantize(cfg(model_path, calib, cache=cache, output=tmp_path / "a.onnx"))
    assert len(calls) == 1 and cache.is_file() and not first.cache_hit
    second = quantize(cfg(model_path, calib, cache=cache, output=tmp_path / "b.onnx"))
    assert len(calls) == 1 and second.cache_hit
    # same ranges -> byte-identical Q/DQ graph
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    # one changed calibration image: stale, refused, and the message says what changed
    img = np.asarray(Image.open(calib / "img000.png")).copy()
    img[0, 0] ^= 255
    Image.fromarray(img).save(calib / "img000.png")
    with pytest.raises(FcnDeployError, match="stale calibration cache.*images"):
        quantize(cfg(model_path, calib, cache=cache, output=tmp_path / "c.onnx"))
    with pytest.raises(FcnDeployError, match="method"):
        quantize(cfg(model_path, calib, cache=cache, method="minmax", output=tmp_path / "c.onnx"))
    assert len(calls) == 1 and not (tmp_path / "c.onnx").exists()


def test_cache_refuses_other_model(setup, tmp_path):
    model_path, calib = setup
    cache = tmp_path / "calib.json"
    quantize(cfg(model_path, calib, cache=cache, output=tmp_path / "a.onnx"))
    other = tiny_fcn(tmp_path / "other.onnx", seed=1)
    with pytest.raises(FcnDeployError, match="onnx_sha256"):
        quantize(cfg(other, calib, cache=cache))


def test_cache_key_lists_every_changed_field():
    key = calib_cache.CacheKey("a" * 64, "b" * 64, {"mean": [0, 0, 0]}, "entropy", 10, ((32, 32),))
    assert key.digest() == calib_cache.CacheKey(**{**key.__dict__}).digest()
    assert key.digest() != calib_cache.CacheKey(**{**key.__dict__, "num_images": 11}).digest()


# --- FP16 -------------------------------------------------------------------------------------------------------
def test_fp16_keeps_io_fp32_and_is_finite(setup):
    model_path, calib = setup
    result = quantize(cfg(model_path, calib, precision="fp16"))
    assert result.output.name == "m.fp16.onnx"
    m = onnx.load(str(result.output))
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert any(i.data_type == TensorProto.FLOAT16 for i in m.graph.initializer)
    x = np.random.default_rng(0).random((1, 3, 32, 48)).astype(np.float32)
    assert (run(model_path, x) == run(result.output, x)).mean() > 0.95
    assert ModelCard.from_onnx(m).precision == "fp16"


def test_fp16_keeps_overflowing_nodes_fp32(tmp_path):
    model_path = tiny_fcn(tmp_path / "big.onnx", big_scale=2e4)  # conv2 activations far beyond FP16's range
    calib = write_images(tmp_path / "calib", 4)
    result = quantize(cfg(model_path, calib, precision="fp16"))
    kept = result.summary["kept_fp32_nodes"]
    assert "conv2" in kept
    m = onnx.load(str(result.output))
    # run with every float tensor exposed: nothing is inf/NaN
    from fcn_deploy.calibration.fp16 import nonfinite_nodes
    from fcn_deploy.core.images import read_image
    from fcn_deploy.core.preprocess import preprocess

    card = ModelCard.from_onnx(m)
    feeds = [{"image": preprocess(read_image(p), card.normalization, (32, 48))} for p in sorted(calib.iterdir())]
    assert nonfinite_nodes(m, feeds) == []


# --- refusals ---------------------------------------------------------------------------------------------------
def test_no_calibration_data_is_refused(setup):
    model_path, _ = setup
    with pytest.raises(FcnDeployError, match="needs calibration images"):
        quantize(QuantizeConfig(model=model_path, precision="int8"))
    assert not model_path.with_name("m.int8.onnx").exists()


def test_already_quantized_model_is_refused(setup):
    model_path, calib = setup
    out = quantize(cfg(model_path, calib)).output
    with pytest.raises(FcnDeployError, match="already"):
        quantize(cfg(out, calib, output=out.with_name("again.onnx")))
    fp16_out = quantize(cfg(model_path, calib, precision="fp16")).output
    with pytest.raises(FcnDeployError, match="already"):
        quantize(cfg(fp16_out, calib, output=out.with_name("again.onnx")))


def test_cardless_model_needs_mean_std(tmp_path):
    model_path = tiny_fcn(tmp_path / "bare.onnx", card=False)
    calib = write_images(tmp_path / "calib", 3)
    with pytest.raises(FcnDeployError, match="--mean and --std"):
        quantize(cfg(model_path, calib))
    result = quantize(cfg(model_path, calib, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))
    meta = {p.key: p.value for p in onnx.load(str(result.output)).metadata_props}
    assert json.loads(meta["fcn_deploy.precision"])["num_images"] == 3
    # Described by --mean/--std alone, both models still run through the runtime backend for the summary.
    assert 0.5 <= result.summary["pixel_agreement"] <= 1.0 and result.summary["latency_ratio"] > 0


def test_folder_errors_and_corrupt_images(tmp_path, caplog):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(FcnDeployError, match="no images"):
        from_folder(empty, 10, 0, None)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"not a png")
    with pytest.raises(FcnDeployError, match="all corrupt"):
        from_folder(bad, 10, 0, None)
    write_images(bad, 2)
    with caplog.at_level("WARNING"):
        calib, held = from_folder(bad, 10, 0, None)
    assert len(calib) == 2 and calib.skipped == 1
    assert "skipped 1 corrupt" in caplog.text and "fewer than the 10 asked" in caplog.text
    assert len(list(calib)) == 2 and len(held) == 0


def test_selection_is_seeded_and_held_out_is_disjoint(tmp_path):
    folder = write_images(tmp_path / "imgs", 10)
    a, held = from_folder(folder, 6, seed=1, num_eval=None)
    b, _ = from_folder(folder, 6, seed=1, num_eval=None)
    c, _ = from_folder(folder, 6, seed=2, num_eval=None)
    assert a.ids == b.ids and a.fingerprint == b.fingerprint and a.ids != c.ids
    assert set(held.ids).isdisjoint(a.ids) and len(held) == 4


def test_stratified_selection_includes_rare_class():
    rng = np.random.default_rng(0)
    presence = np.zeros((200, 4), bool)
    presence[:, 0] = True
    presence[:, 1] = rng.random(200) < 0.5
    presence[[17, 123, 190], 3] = True  # a class in 3 of 200 images
    picked = stratified_order(presence, 10, seed=0)
    assert len(picked) == len(set(picked)) == 10
    assert presence[picked, 3].sum() >= 2  # quota = ceil(10 / 8) = 2


def test_multiple_calibration_shapes(setup, tmp_path):
    model_path, calib = setup
    result = quantize(cfg(model_path, calib, calib_shapes=((32, 48), (16, 24)), output=tmp_path / "s.onnx"))
    assert result.summary["shapes"] == [[32, 48], [16, 24]]


def test_dataset_source_with_masks_reports_miou(tmp_path):
    model_path = tiny_fcn(tmp_path / "m4.onnx", num_classes=4)
    result = quantize(QuantizeConfig(model=model_path, precision="int8", calib_dataset="synthetic:train",
                                     num_images=6, eval_images=4, latency_runs=1, calib_shapes=((64, 64),)))
    s = result.summary
    assert s["num_images"] == 6 and s["eval_images"] == 4 and s["eval_source"] == "synthetic:val"
    assert s["held_out"] and s["calibration_source"].startswith("synthetic:train")
    for key in ("miou_fp32", "miou_lowered"):
        assert 0.0 <= s[key] <= 1.0
    assert s["miou_delta"] == pytest.approx(s["miou_lowered"] - s["miou_fp32"])
    # The one score(): the FP32 figure is the FP32 model's score on the held-out images, at the labels' size.
    from fcn_deploy.core.datasets import build_dataset
    from fcn_deploy.core.scoring import score
    from fcn_deploy.runtime.ort_backend import OrtBackend

    held_out = build_dataset("synthetic", None, "val")
    assert s["miou_fp32"] == score(OrtBackend(model_path), held_out, (64, 64), indices=range(4)).metrics["mean_iou"]


def test_video_source(tmp_path):
    import cv2

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 32))
    rng = np.random.default_rng(0)
    for _ in range(12):
        writer.write((rng.random((32, 48, 3)) * 255).astype(np.uint8))
    writer.release()
    model_path = tiny_fcn(tmp_path / "m.onnx")
    result = quantize(QuantizeConfig(model=model_path, precision="int8", calib_video=path, num_images=5,
                                     eval_images=3, latency_runs=1))
    assert result.summary["num_images"] == 5 and result.summary["eval_images"] == 3
    assert result.summary["calibration_source"].startswith("video:")


def test_range_methods_on_streamed_histogram():
    rng = np.random.default_rng(0)
    hist = ranges._AbsHistogram()
    chunks = [rng.standard_normal(20000).astype(np.float32) * s for s in (0.5, 1.0, 2.0)]
    chunks.append(np.array([40.0], np.float32))  # one outlier grows the range by whole factors
    for c in chunks:
        hist.add(c)
    assert hist.counts.sum() == sum(c.size for c in chunks)
    assert hist.max == 40.0 and hist.limit >= 40.0
    t_min, t_pct, t_ent = (hist.threshold(m) for m in ("minmax", "percentile", "entropy"))
    assert t_min == 40.0
    assert 2.0 < t_pct < 40.0  # the outlier is clipped, the bulk (|x| up to ~8) is kept
    assert 1.0 < t_ent < 40.0


def test_entropy_does_not_collapse_on_relu_outputs():
    rng = np.random.default_rng(1)
    relu = np.maximum(rng.standard_normal(200000).astype(np.float32) * 10, 0)  # half exact zeros
    hist = ranges._AbsHistogram()
    hist.add(relu)
    # the zero spike must not drag the clip down to a fraction of the distribution
    assert hist.threshold("entropy") > 0.8 * hist.threshold("percentile")


def test_collect_ranges_streams_one_feed_at_a_time(setup):
    model_path, _ = setup
    m = onnx.load(str(model_path))
    m = onnx.shape_inference.infer_shapes(m)
    tensors = ranges.calibration_tensors(m, ["Conv"])
    assert "image" in tensors and "r2" in tensors and "c1.w" not in tensors
    feeds = ({"image": np.full((1, 3, 16, 16), v, np.float32)} for v in (1.0, -3.0))
    got = ranges.collect_ranges(model_path, feeds, ["image"], "minmax")
    assert got["image"] == ranges.TensorRange(-3.0, 1.0, 3.0)
    assert got["image"].asymmetric() == (-3.0, 1.0) and got["image"].symmetric() == (-3.0, 3.0)


def test_reader_streams_and_uses_card_normalisation(tmp_path):
    from fcn_deploy.calibration.reader import ImageReader
    from fcn_deploy.core.card import Normalization

    folder = write_images(tmp_path / "imgs", 3, size=(20, 30))
    images, _ = from_folder(folder, 3, 0, None)
    norm = Normalization.preset("caffe")
    reader = ImageReader(images, norm, "image", [(16, 24), None])
    first = reader.get_next()
    assert reader.images_read == 1  # nothing read ahead
    assert first["image"].shape == (1, 3, 16, 24) and first["image"].dtype == np.float32
    assert reader.get_next()["image"].shape == (1, 3, 20, 30)  # None = the image's own size
    feeds = 2
    while reader.get_next() is not None:
        feeds += 1
    assert feeds == 6 and reader.images_read == 3
    # the caffe card: BGR, 0-255, mean subtracted
    from fcn_deploy.core.images import read_image

    img = read_image(folder / f"{images.ids[0]}")
    expected = img[:, :, ::-1].astype(np.float32) - np.array(norm.mean, np.float32)
    reader.rewind()
    reader.get_next()
    np.testing.assert_allclose(reader.get_next()["image"][0].transpose(1, 2, 0), expected, atol=1e-4)


def test_diagonal_deconvs_become_grouped_with_identical_output():
    """The fixed bilinear upsampling (dense, diagonal across classes) is rewritten to group=C for ORT: same output."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from fcn_deploy.calibration.int8 import group_diagonal_deconvs

    c, k = 3, 4
    diag = np.zeros((c, c, k, k), np.float32)
    diag[np.arange(c), np.arange(c)] = np.random.default_rng(0).random((c, k, k), np.float32)
    dense = diag.copy()
    dense[0, 1] = 0.5  # not diagonal: must be left alone
    nodes = [helper.make_node("ConvTranspose", ["x", "wd"], ["y1"], name="up_diag", strides=[2, 2]),
             helper.make_node("ConvTranspose", ["x", "wn"], ["y2"], name="up_dense", strides=[2, 2])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 5, 7])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y1", "y2")],
        [numpy_helper.from_array(diag, "wd"), numpy_helper.from_array(dense, "wn")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(1).standard_normal((1, c, 5, 7)).astype(np.float32)

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})

    before = run(model)
    assert group_diagonal_deconvs(model) == ["up_diag"]
    groups = {n.name: [a.i for a in n.attribute if a.name == "group"] for n in model.graph.node}
    assert groups == {"up_diag": [c], "up_dense": []}
    after = run(model)
    np.testing.assert_allclose(after[0], before[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(after[1], before[1])
