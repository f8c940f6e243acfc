"""The paper's metrics (fcn.md 4.1) against hand-computed confusion matrices and a loop-based reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcn_deploy.core.metrics import ConfusionMatrix, metrics_from_matrix, pixel_agreement


def test_hand_computed_with_ignore_label():
    target = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 0, 2]])
    cm = ConfusionMatrix(3)
    cm.update(target, pred)
    # The ignored pixel (GT 255, predicted 2) must not be counted anywhere.
    np.testing.assert_array_equal(cm.matrix, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    m = cm.compute()
    assert m["pixel_accuracy"] == pytest.approx(3 / 5)
    assert m["mean_accuracy"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m["per_class_iou"] == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert m["mean_iou"] == pytest.approx(1 / 3)
    assert m["fw_iou"] == pytest.approx((2 * 1 / 3 + 2 * 2 / 3 + 1 * 0) / 5)
    assert m["num_pixels"] == 5


def test_class_absent_from_gt_and_prediction_drops_out():
    target = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0])
    cm = ConfusionMatrix(4)  # class 3 never appears
    cm.update(target, pred)
    m = cm.compute(class_names=("bg", "a", "b", "absent"))
    assert m["per_class_iou"]["absent"] is None
    assert m["per_class_accuracy"]["absent"] is None
    assert m["per_class_iou"]["a"] == pytest.approx(2 / 3)
    assert m["mean_iou"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert m["mean_accuracy"] == pytest.approx((1 / 2 + 1 + 0) / 3)


def test_class_predicted_but_absent_from_gt_counts_zero_iou():
    cm = ConfusionMatrix(3)
    cm.update(np.zeros(4, np.uint8), np.array([0, 0, 1, 1]))
    m = cm.compute()
    assert m["per_class_iou"] == [pytest.approx(0.5), 0.0, None]
    assert m["mean_iou"] == pytest.approx(0.25)  # class 1 counts (IoU 0), class 2 drops out
    assert m["mean_accuracy"] == pytest.approx(0.5)  # accuracy undefined for classes absent from GT
    assert m["fw_iou"] == pytest.approx(0.5)  # restricted to t_i > 0
    assert m["per_class_accuracy"][1] is None


def test_perfect_prediction():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 5, (2, 16, 16))
    cm = ConfusionMatrix(5)
    cm.update(target, target)
    m = cm.compute()
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou"):
        assert m[key] == 1.0
    assert m["per_class_iou"] == [1.0] * 5


def test_ignore_index_inside_range_and_negative_gt_are_skipped():
    cm = ConfusionMatrix(3, ignore_index=2)
    cm.update(np.array([0, 1, 2, -1]), np.array([0, 0, 1, 1]))
    np.testing.assert_array_equal(cm.matrix, [[1, 0, 0], [1, 0, 0], [0, 0, 0]])
    cm = ConfusionMatrix(3, ignore_index=None)
    cm.update(np.array([0, 255, 7]), np.array([0, 1, 2]))
    assert cm.matrix.sum() == 1


def test_merge_reset_and_batches():
    rng = np.random.default_rng(1)
    t, p = rng.integers(0, 4, (2, 3, 8, 8))
    whole, parts = ConfusionMatrix(4), ConfusionMatrix(4)
    whole.update(t, p)
    for i in range(3):
        part = ConfusionMatrix(4)
        part.update(t[i], p[i])
        parts.merge(part)
    np.testing.assert_array_equal(whole.matrix, parts.matrix)
    assert whole.matrix.dtype == np.int64
    whole.reset()
    assert whole.matrix.sum() == 0
    with pytest.raises(ValueError):
        whole.merge(ConfusionMatrix(5))


def test_bad_input_raises():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="predictions"):
        cm.update(np.zeros(2), np.array([0, 3]))
    with pytest.raises(ValueError):
        cm.compute(class_names=("a", "b"))


def test_empty_matrix_gives_nan_not_crash():
    m = ConfusionMatrix(3).compute()
    assert all(math.isnan(m[k]) for k in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou"))
    assert m["per_class_iou"] == [None, None, None]


def _reference(matrix: np.ndarray) -> dict:
    """The formulas of fcn.md 4.1 written out with loops."""
    n = len(matrix)
    t = [sum(matrix[i]) for i in range(n)]
    col = [sum(matrix[j][i] for j in range(n)) for i in range(n)]
    accs = [matrix[i][i] / t[i] for i in range(n) if t[i] > 0]
    ious = {i: matrix[i][i] / (t[i] + col[i] - matrix[i][i]) for i in range(n) if t[i] + col[i] > 0}
    total = sum(t)
    return {
        "pixel_accuracy": sum(matrix[i][i] for i in range(n)) / total,
        "mean_accuracy": sum(accs) / len(accs),
        "mean_iou": sum(ious.values()) / len(ious),
        "fw_iou": sum(t[i] * ious[i] for i in range(n) if t[i] > 0) / total,
    }


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6).flatmap(lambda n: st.lists(st.integers(0, 9), min_size=n * n, max_size=n * n)))
def test_matches_loop_reference(counts):
    n = int(round(len(counts) ** 0.5))
    matrix = np.array(counts, np.int64).reshape(n, n)
    if matrix.sum() == 0:
        return
    got, want = metrics_from_matrix(matrix), _reference(matrix.tolist())
    for key, value in want.items():
        assert got[key] == pytest.approx(value), key
        assert 0.0 <= got[key] <= 1.0


def test_pixel_agreement():
    a = np.array([[0, 1], [2, 3]])
    assert pixel_agreement(a, a) == 1.0
    assert pixel_agreement(a, np.array([[0, 1], [0, 0]])) == 0.5
    with pytest.raises(ValueError):
        pixel_agreement(a, a[:1])


# --- score(): the one scoring convention -------------------------------------------------------------------------
class _Bands:
    """(image, labels) pairs of colour bands, with the class list score() needs."""

    num_classes, ignore_index, class_names = 3, 255, ("red", "green", "blue")

    def __init__(self, sizes):
        from test_runtime_helpers import colour_image

        self.items = [colour_image(h, w, i) for i, (h, w) in enumerate(sizes)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_score_brings_predictions_to_the_label_resolution(tmp_path):
    from test_runtime_helpers import make_channel_model

    from fcn_deploy.core.preprocess import resize_labels
    from fcn_deploy.core.scoring import predict, score
    from fcn_deploy.runtime.ort_backend import OrtBackend

    backend = OrtBackend(make_channel_model(tmp_path / "m.onnx"))
    ds = _Bands([(30, 45), (21, 60)])
    native = score(backend, ds)
    assert native.metrics["mean_iou"] == pytest.approx(1.0) and native.metrics["num_images"] == 2
    small = score(backend, ds, (10, 15), keep_predictions=True)
    assert [p.shape for p in small.predictions] == [(10, 15), (10, 15)]  # kept at the network size
    cm = ConfusionMatrix(3, 255)
    for image, labels in ds.items:
        cm.update(labels, resize_labels(predict(backend, image, (10, 15)), labels.shape))
    assert small.metrics == cm.compute(ds.class_names) | {"num_images": 2}
    assert small.matrix.matrix.sum() == 30 * 45 + 21 * 60  # every ground-truth pixel, none resampled
    assert score(backend, ds, indices=[1]).metrics["num_images"] == 1


def test_score_pairs_runs_every_backend_once_per_image_and_scores_only_with_labels(tmp_path):
    from test_runtime_helpers import make_channel_model

    from fcn_deploy.core.scoring import score_pairs
    from fcn_deploy.runtime.ort_backend import OrtBackend

    a = OrtBackend(make_channel_model(tmp_path / "a.onnx", ("labels",)))
    b = OrtBackend(make_channel_model(tmp_path / "b.onnx", ("probs",)))
    ds = _Bands([(12, 18), (9, 27)])
    reads = []

    def pairs():
        for image, labels in ds.items:
            reads.append(image.shape)
            yield image, labels

    s_a, s_b = score_pairs([a, b], pairs(), None, num_classes=3, ignore_index=255, class_names=ds.class_names,
                           keep_predictions=True)  # fmt: skip
    assert reads == [(12, 18, 3), (9, 27, 3)]
    assert s_a.metrics == s_b.metrics and s_a.metrics["mean_iou"] == pytest.approx(1.0)
    unlabelled = score_pairs([a], ((im, None) for im, _ in ds.items), None, num_classes=None)[0]
    assert unlabelled.metrics == {"num_images": 2} and unlabelled.matrix is None
