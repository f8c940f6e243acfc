"""The calibration feed: ONNX Runtime's one-method CalibrationDataReader over an ImageSet, one image at a time.

Each image is preprocessed by `fcn_deploy.core.preprocess` with the model card's normalisation (the same code the
runtime uses) at every calibration shape in turn, so a dynamic model is calibrated at each size it will run at.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from fcn_deploy.calibration.images import ImageSet
from fcn_deploy.core.card import Normalization
from fcn_deploy.core.preprocess import preprocess


class ImageReader:
    """`get_next() -> {input_name: 1x3xHxW float32} | None`; streams, never holds more than one image."""

    def __init__(
        self,
        images: ImageSet,
        norm: Normalization,
        input_name: str,
        shapes: Sequence[tuple[int, int] | None] = (None,),
    ) -> None:
        self.images = images
        self.norm = norm
        self.input_name = input_name
        self.shapes = tuple(shapes) or (None,)
        self.images_read = 0
        self._feeds = self._generate()

    def _generate(self) -> Iterator[dict[str, np.ndarray]]:
        for sample in self.images:
            self.images_read += 1
            for shape in self.shapes:  # None = the image's own size
                yield {self.input_name: preprocess(sample.image, self.norm, shape)}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:
        self.images_read = 0
        self._feeds = self._generate()
