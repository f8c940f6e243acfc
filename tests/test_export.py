"""ONNX export: dynamic axes, shape-dependent crops, heads, Resize upsampling, model card, checks (narrow nets)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.model_config import ModelConfig
from fcn_deploy.core.onnx_io import load_onnx
from fcn_deploy.core.shapes import DEFAULT_SHAPES
from fcn_deploy.export import ExportOptions, export_onnx, model_for_export
from fcn_deploy.export.fixed_upsample import check_fixed_bilinear, interpolation_matrix
from fcn_deploy.export.validate import (
    ALLOWED_OPS,
    ExportValidationError,
    check_operators,
    parity,
    raise_on_failed,
)
from fcn_deploy.training.fcn import FCN, bilinear_kernel

SIZES = [(1, 1), (17, 17), (33, 47), (64, 96)]
OPT = (48, 64)


def small(variant: str = "fcn8s", padding: str = "paper", classes: int = 5) -> tuple[FCN, ModelCard]:
    model, card, trained = model_for_export(None, variant, classes, 0.0625, padding)
    assert not trained
    return model, card


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def torch_logits(model: FCN, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def export(tmp: Path, name: str, model: FCN, card: ModelCard, **kw) -> tuple[Path, object]:
    out = tmp / f"{name}.onnx"
    kw.setdefault("opt_shape", OPT)
    return out, export_onnx(model, card, out, ExportOptions(**kw))


@pytest.fixture(scope="module")
def labels_export(tmp_path_factory) -> tuple[Path, FCN, object]:
    model, card = small()
    out, report = export(tmp_path_factory.mktemp("labels"), "fcn8s", model, card)
    return out, model, report


def test_dynamic_dims_are_named(labels_export) -> None:
    path, _, _ = labels_export
    model = onnx.load(str(path))
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(model.graph.input) + list(model.graph.output)}  # fmt: skip
    assert dims == {"image": ["batch", 3, "height", "width"], "labels": ["batch", "height", "width"]}
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT32
    assert model.opset_import[0].version == 17


def test_crops_stay_shape_dependent(labels_export) -> None:
    """No Slice end is a constant: each crop reads its reference's size from a Shape at run time."""
    model = onnx.load(str(labels_export[0]))
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    slices = [n for n in model.graph.node if n.op_type == "Slice"]
    assert len(slices) >= 3 and "Shape" in {n.op_type for n in model.graph.node}
    assert all(n.input[2] not in constants for n in slices)


def test_output_is_input_size_at_odd_and_tiny_sizes(labels_export) -> None:
    path, model, _ = labels_export
    sess = session(path)
    rng = np.random.default_rng(1)
    for h, w in SIZES:
        x = rng.standard_normal((2, 3, h, w), dtype=np.float32)
        (labels,) = sess.run(None, {"image": x})
        assert labels.shape == (2, h, w) and labels.dtype == np.int32
        assert (labels == torch_logits(model, x).argmax(1)).mean() >= 0.9999


def test_model_card_round_trip(labels_export) -> None:
    path, _, report = labels_export
    card = ModelCard.from_onnx(load_onnx(path, full_check=True), str(path))
    assert card == report.card
    assert [(o.name, o.kind) for o in card.outputs] == [("labels", "labels")]
    assert (card.min_shape, card.opt_shape, card.max_shape) == ((32, 32), OPT, (1088, 1920))
    assert card.upsample == "matmul" and card.provenance["opset"] == 17 and card.provenance["untrained"]
    assert card.width == 0.0625 and card.padding == "paper" and card.num_classes == 5


def test_report_lists_three_parity_sizes_incl_odd_and_batch2(labels_export) -> None:
    _, _, report = labels_export
    sizes = [r.size for r in report.parity]
    assert len(sizes) == 3 and any(h % 2 and w % 2 for h, w in sizes)
    assert any(r.batch == 2 for r in report.parity)
    assert all(r.passed and r.label_agreement >= 0.9999 for r in report.parity)
    assert set(report.op_counts) <= ALLOWED_OPS and "Identity" not in report.op_counts  # slimmed


@pytest.mark.parametrize(
    ("variant", "padding", "head"),
    [("fcn8s-atonce", "same", "logits"), ("fcn16s", "paper", "probs"), ("fcn32s", "same", "labels+probs")],
)
def test_head_parity_with_pytorch(tmp_path, variant, padding, head) -> None:
    model, card = small(variant, padding)
    path, report = export(tmp_path, head, model, card, head=head)
    kinds = [o.kind for o in report.card.outputs]
    assert kinds == head.split("+")
    sess = session(path)
    x = np.random.default_rng(2).standard_normal((1, 3, 35, 51), dtype=np.float32)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image": x}), strict=True))
    ref = torch_logits(model, x)
    if "logits" in got:
        assert np.abs(got["logits"] - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    if "probs" in got:
        probs = torch.softmax(torch.from_numpy(ref), 1).numpy()
        assert got["probs"].shape == (1, 5, 35, 51) and np.abs(got["probs"] - probs).max() <= 1e-5
    if "labels" in got:
        assert (got["labels"] == ref.argmax(1)).mean() >= 0.9999


EXACT_FORMS = {"resize": {"Resize", "Pad"}, "matmul": {"MatMul", "Range"}}


@pytest.mark.parametrize("form", EXACT_FORMS)
@pytest.mark.parametrize(("variant", "padding"), [("fcn8s", "paper"), ("fcn8s", "same"), ("fcn32s", "paper")])
def test_exact_upsampling_forms_equal_deconv(tmp_path, variant, padding, form) -> None:
    model, card = small(variant, padding)
    deconv, _ = export(tmp_path, "deconv", model, card, head="logits", upsample="deconv")
    exact, report = export(tmp_path, form, model, card, head="logits", upsample=form)
    assert "ConvTranspose" in {n.op_type for n in onnx.load(str(deconv)).graph.node}
    ops = {n.op_type: n for n in onnx.load(str(exact)).graph.node}
    assert "ConvTranspose" not in ops and EXACT_FORMS[form] <= set(ops)
    if form == "resize":
        attrs = {a.name: a.s for a in ops["Resize"].attribute if a.type == a.STRING}
        assert attrs["mode"] == b"linear" and attrs["coordinate_transformation_mode"] == b"half_pixel"
    assert report.card.upsample == form
    a, b = session(deconv), session(exact)
    rng = np.random.default_rng(3)
    for h, w in [(1, 1), (17, 17), (33, 47), (64, 96)]:
        x = rng.standard_normal((1, 3, h, w), dtype=np.float32)
        ya, yb = a.run(None, {"image": x})[0], b.run(None, {"image": x})[0]
        assert ya.shape == yb.shape == (1, 5, h, w)
        assert np.abs(ya - yb).max() <= 1e-5


def test_interpolation_matrix_holds_the_deconv_taps() -> None:
    """Row x of the matmul form's matrix is the 1-D bilinear kernel at tap x + p - s j, bit for bit the weights
    `bilinear_kernel` gives the deconv (its 2-D kernel is the outer product of it), and 0 off the 2s taps."""
    for k, s, p in [(4, 2, 1), (16, 8, 4), (16, 8, 0), (64, 32, 0)]:
        taps = bilinear_kernel(1, k)[0, 0].diagonal().sqrt()  # k1[t]^2 on the diagonal; exact in float32
        n = 5
        a = interpolation_matrix(n, s, p, torch.zeros(1))
        assert a.shape == ((n + 1) * s - 2 * p, n)
        want = torch.zeros_like(a)
        for x in range(a.shape[0]):
            for j in range(n):
                if 0 <= x + p - s * j < k:
                    want[x, j] = taps[x + p - s * j]
        assert torch.equal(a, want), (k, s, p)


def test_resize_refused_when_upsampling_is_learned_or_changed(tmp_path) -> None:
    learned = FCN(ModelConfig("fcn8s", 3, 0.0625, "same", learn_upsampling=True))
    card = ModelCard.default("fcn8s", 3)
    for form in EXACT_FORMS:
        with pytest.raises(FcnDeployError, match=f"--upsample {form} needs fixed bilinear.*learn_upsampling"):
            export(tmp_path, "learned", learned, card, upsample=form)
    model, card = small(classes=3)
    with torch.no_grad():
        model.upscore8.weight.mul_(1.01)
    with pytest.raises(FcnDeployError, match="upscore8 is not the fixed bilinear kernel"):
        check_fixed_bilinear(model)
    assert not list(tmp_path.iterdir())


def test_upsample_auto_is_matmul_where_exact_and_deconv_where_learned(tmp_path) -> None:
    """`--upsample auto`: the exact MatMul form for fixed bilinear kernels, the deconvs for learned ones (where
    the exact forms are refused), and the card says which was written."""
    model, card = small(padding="same")
    path, report = export(tmp_path, "auto", model, card, upsample="auto")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert report.card.upsample == "matmul" and "MatMul" in ops and "ConvTranspose" not in ops
    learned = FCN(ModelConfig("fcn8s", 3, 0.0625, "same", learn_upsampling=True))
    path, report = export(tmp_path, "learned", learned, ModelCard.default("fcn8s", 3), upsample="auto")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert report.card.upsample == "deconv" and "ConvTranspose" in ops and "Resize" not in ops


def test_card_architecture_and_shapes_come_from_the_model_and_the_one_range(tmp_path) -> None:
    config = ModelConfig("fcn32s", 3, 0.0625, "same", learn_upsampling=True)
    _, report = export(tmp_path, "learned", FCN(config), ModelCard.default("fcn32s", 3), head="logits")
    assert report.card.config == config  # the card describes the graph, whatever card came in
    assert report.card.shapes == DEFAULT_SHAPES.around(OPT) and report.card.max_shape == DEFAULT_SHAPES.max_hw


def test_static_export_fixes_every_axis(tmp_path) -> None:
    model, card = small()
    path, report = export(tmp_path, "static", model, card, static_shape=(40, 56), opt_shape=None)
    graph = onnx.load(str(path)).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [1, 3, 40, 56]
    assert report.card.min_shape == report.card.opt_shape == report.card.max_shape == (40, 56)
    assert session(path).run(None, {"image": np.zeros((1, 3, 40, 56), np.float32)})[0].shape == (1, 40, 56)


def test_batch_only_dynamic_fixes_height_and_width(tmp_path) -> None:
    model, card = small(padding="same")
    path, report = export(tmp_path, "batch", model, card, dynamic=("batch",), head="logits")
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, *OPT]
    assert report.card.min_shape == report.card.max_shape == OPT
    assert [(r.size, r.batch) for r in report.parity] == [(OPT, 2)]


class ShapeSwitchFCN(FCN):
    """A data-dependent branch that tracing bakes in: the exported graph diverges from PyTorch at other sizes."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = super().forward(image)
        return out + 1.0 if image.shape[2] > 40 else out


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the baked-in branch is the point of this test
def test_failed_parity_leaves_no_file(tmp_path) -> None:
    model = ShapeSwitchFCN(ModelConfig("fcn8s", 3, 0.0625, "same"))
    with pytest.raises(ExportValidationError, match="disagrees with PyTorch"):
        export(tmp_path, "bad", model, ModelCard.default("fcn8s", 3), head="logits")
    assert not list(tmp_path.iterdir())  # neither the output nor a temp file


def test_parity_failure_is_reported_per_size(labels_export) -> None:
    path, model, _ = labels_export
    results = parity(path, lambda x: torch_logits(model, x) + 0.01, [(33, 47), (17, 17)])
    assert [r.passed for r in results] == [False, False] and results[0].max_abs_diff > 5e-3
    with pytest.raises(ExportValidationError, match="33x47"):
        raise_on_failed(results)


def test_allow_list_rejects_other_ops() -> None:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    for node in (onnx.helper.make_node("Erf", ["x"], ["y"], name="erf0"),
                 onnx.helper.make_node("Relu", ["x"], ["y"], name="custom0", domain="com.example")):  # fmt: skip
        graph = onnx.helper.make_graph([node], "g", [x], [y])
        with pytest.raises(ExportValidationError, match=node.name):
            check_operators(onnx.helper.make_model(graph))


def test_allow_list_requires_constant_axes() -> None:
    """onnx-tensorrt needs Unsqueeze/Slice axes and Conv weights as initializers, not computed tensors."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])
    axes = onnx.helper.make_tensor_value_info("axes", onnx.TensorProto.INT64, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    node = onnx.helper.make_node("Unsqueeze", ["x", "axes"], ["y"], name="unsq0")
    model = onnx.helper.make_model(onnx.helper.make_graph([node], "g", [x, axes], [y]))
    with pytest.raises(ExportValidationError, match="computed weight/axes/K input \\(unsq0\\)"):
        check_operators(model)
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([0], np.int64), "axes"))
    assert check_operators(model) == {"Unsqueeze": 1}


def test_checking_an_existing_file_needs_no_torch(labels_export) -> None:
    code = (
        "import sys\nfrom fcn_deploy.export.validate import check_onnx_file\n"
        f"counts = check_onnx_file({str(labels_export[0])!r})\n"
        "assert 'torch' not in sys.modules, 'torch imported'\nprint(sorted(counts))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "ArgMax" in out and "Conv" in out


def test_export_options_and_their_choices_need_no_torch() -> None:
    code = (
        "import sys\nfrom fcn_deploy.export import ExportOptions\nfrom fcn_deploy.export.options import HEADS\n"
        "ExportOptions(head=HEADS[-1])\ntry:\n    ExportOptions(opset=99)\nexcept Exception as e:\n    print(e)\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "--opset 99: supported range is 13..20" in out
