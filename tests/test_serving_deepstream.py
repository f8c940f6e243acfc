"""`package --format deepstream`: the argmax_1 ONNX against the labels head (ONNX Runtime, batch 1 to 4, a real
FCN-8s with its crop/Slice subgraph), and the nvinfer / deepstream-app keys against DeepStream's documented set.
DeepStream itself cannot run here (no GPU, no DeepStream SDK)."""

from __future__ import annotations

import configparser

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.preprocess import preprocess
from fcn_deploy.serving.deepstream import APP_KEYS, NVINFER_KEYS, check_keys, offsets, package_deepstream

HW = (48, 64)


@pytest.fixture(scope="module")
def fcn8s(tmp_path_factory):
    torch = pytest.importorskip("torch", reason="torch not installed: the FCN-8s export needs '.[train]'")
    from fcn_deploy.export import ExportOptions, export_onnx, model_for_export

    model, card, _ = model_for_export(None, "fcn8s", 5, 0.0625, "paper")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # random scorers: an untrained FCN's zero scorers would give an all-zero class map
        for n, p in model.named_parameters():
            if "score" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    path = tmp_path_factory.mktemp("ds") / "fcn8s.onnx"
    export_onnx(model, card, path, ExportOptions(opt_shape=HW, check_sizes=(HW,)))
    return path


def _ini(path):
    cp = configparser.ConfigParser()
    cp.optionxform = str  # keep key case
    cp.read(path)
    return cp


def test_argmax_1_equals_the_labels_head_at_batch_1_to_4(fcn8s, tmp_path) -> None:
    out = package_deepstream(fcn8s, tmp_path / "ds", size=HW, batch_size=4)
    ds = onnx.load(str(out / "fcn8s.ds.onnx"))
    onnx.checker.check_model(ds, full_check=True)
    card = ModelCard.from_onnx(onnx.load(str(fcn8s)))
    [o] = ds.graph.output
    assert o.name == "argmax_1" and o.type.tensor_type.elem_type == onnx.TensorProto.INT32
    dims = [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim]
    assert dims == ["batch", *HW, 1]
    a = ort.InferenceSession(str(out / "fcn8s.ds.onnx"), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(fcn8s), providers=["CPUExecutionProvider"])
    norm = card.normalization
    k = (np.float32(norm.scale) / np.asarray(norm.std, np.float32)).reshape(1, 3, 1, 1)
    off = np.asarray(offsets(card), np.float32).reshape(1, 3, 1, 1)
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 4):  # partial batches of a 4-camera pipeline
        pixels = rng.integers(0, 256, (n, 3, *HW)).astype(np.float32)
        got = a.run(["argmax_1"], {"image": pixels - off})[0]
        want = b.run(["labels"], {"image": (pixels - off) * k})[0]
        assert got.shape == (n, *HW, 1)
        np.testing.assert_array_equal(got[..., 0], want)
        assert len(np.unique(want)) > 1
        # and against the card's own preprocessing of the same frames: equal up to float32 rounding at ties
        frames = pixels.transpose(0, 2, 3, 1).astype(np.uint8)
        ref = b.run(["labels"], {"image": np.concatenate([preprocess(f, norm) for f in frames])})[0]
        assert (got[..., 0] == ref).mean() > 0.999
    with pytest.raises(Exception, match="(?i)dimension|shape|invalid"):
        a.run(["argmax_1"], {"image": np.zeros((1, 3, 32, 32), np.float32)})  # fixed H x W


def test_configs_use_documented_keys_only(fcn8s, tmp_path) -> None:
    out = package_deepstream(fcn8s, tmp_path / "ds", size=HW, batch_size=4,
                             sources=["file:///data/cam0.mp4", "rtsp://cam1/stream"])  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == [
        "config_infer_primary_fcn8s.txt", "deepstream_app_fcn8s.txt", "fcn8s.ds.onnx", "labels.txt"]  # fmt: skip
    card = ModelCard.from_onnx(onnx.load(str(fcn8s)))
    prop = _ini(out / "config_infer_primary_fcn8s.txt")["property"]
    assert set(prop) <= NVINFER_KEYS
    assert prop["network-type"] == "2" and prop["output-blob-names"] == "argmax_1"
    assert prop["infer-dims"] == "3;48;64" and prop["batch-size"] == "4" and prop["num-detected-classes"] == "5"
    assert prop["parse-segmentation-func-name"] == "NvDsInferParseCustomPeopleSemSegNet"
    assert prop["custom-lib-path"].endswith("libnvds_infercustomparser.so")
    assert prop["onnx-file"] == "fcn8s.ds.onnx" and prop["strongly-typed"] == "1" and prop["net-scale-factor"] == "1.0"
    np.testing.assert_allclose([float(v) for v in prop["offsets"].split(";")], np.asarray(card.normalization.mean) * 255,
                               rtol=1e-6)  # fmt: skip
    assert prop["model-color-format"] == "0"
    assert (out / "labels.txt").read_text().split() == list(card.class_names)
    app = _ini(out / "deepstream_app_fcn8s.txt")
    for group in app.sections():
        assert set(app[group]) <= APP_KEYS[group.rstrip("0123456789")], group
    assert app["source0"]["type"] == "3" and app["source1"]["type"] == "4" and app["streammux"]["live-source"] == "1"
    assert app["streammux"]["batch-size"] == "2" and app["segvisual"]["width"] == "64"
    assert app["primary-gie"]["config-file"] == "config_infer_primary_fcn8s.txt"


def test_refusals(fcn8s, tmp_path) -> None:
    with pytest.raises(FcnDeployError, match="do not document|does not document"):
        check_keys([("property", {"network-typ": 2})], "cfg")
    with pytest.raises(FcnDeployError, match="--sources"):
        package_deepstream(fcn8s, tmp_path / "x", size=HW, sources=["/data/cam.mp4"])
    with pytest.raises(FcnDeployError, match="holds the input"):
        package_deepstream(fcn8s, fcn8s.parent, size=HW, force=True)
    assert not (tmp_path / "x").exists() and not list(tmp_path.iterdir())


def test_a_scores_head_gets_an_in_graph_argmax(tmp_path) -> None:
    from test_serving import tiny_onnx

    path = tiny_onnx(tmp_path / "p.onnx", probs=True)
    m = onnx.load(str(path))
    card = ModelCard.from_onnx(m)
    keep = [o for o in m.graph.output if o.name == "probs"]
    del m.graph.output[:]
    m.graph.output.extend(keep)
    card.replace(outputs=tuple(o for o in card.outputs if o.kind == "probs")).attach(m)
    onnx.save(m, str(path))
    out = package_deepstream(path, tmp_path / "ds", size=HW, batch_size=2)
    a = ort.InferenceSession(str(out / "p.ds.onnx"), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).integers(0, 256, (3, 3, *HW)).astype(np.float32) - 100
    k = (card.normalization.scale / np.asarray(card.normalization.std, np.float32)).reshape(1, 3, 1, 1)
    want = b.run(["probs"], {"image": (x * k).astype(np.float32)})[0].argmax(1)
    np.testing.assert_array_equal(a.run(["argmax_1"], {"image": x})[0][..., 0], want)
