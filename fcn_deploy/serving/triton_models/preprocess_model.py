"""Triton Python-backend model: pictures -> the network's input, through fcn-deploy's one preprocessing.

Input IMAGE, uint8, per request [N, ...] with each sample either a raw RGB frame H x W x 3 (gray H x W x 1 and
RGBA H x W x 4 are converted by the one rule) or an encoded JPEG/PNG as 1 x 1 x L bytes (zero padding after the
image's end is ignored by the decoders). Output: the network input, float32 N x 3 x H x W, preprocessed exactly as
`fcn_deploy.core.preprocess.preprocess` does on the client side. All samples of one request must share H x W.
"""

import io
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the fcn_deploy copy shipped beside this file

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from fcn_deploy.core.card import ModelCard  # noqa: E402
from fcn_deploy.core.errors import FcnDeployError  # noqa: E402
from fcn_deploy.core.images import read_image  # noqa: E402
from fcn_deploy.core.preprocess import preprocess  # noqa: E402


def decode(sample: np.ndarray) -> np.ndarray:
    if sample.ndim == 3 and sample.shape[0] == 1 and sample.shape[1] == 1 and sample.shape[2] not in (1, 3, 4):
        return read_image(io.BytesIO(sample.reshape(-1).tobytes()))  # type: ignore[arg-type]
    return sample


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.card = ModelCard.from_json(config["parameters"]["fcn_deploy_card"]["string_value"], "model card")
        self.output_name = config["output"][0]["name"]

    def _one(self, request):
        images = np.from_dlpack(pb_utils.get_input_tensor_by_name(request, "IMAGE"))
        if images.ndim != 4:
            raise FcnDeployError(f"IMAGE: expected [N, H, W, 3] frames or [N, 1, 1, L] bytes, got {list(images.shape)}")
        batch = [preprocess(decode(s), self.card.normalization) for s in images]
        sizes = sorted({b.shape[2:] for b in batch})
        if len(sizes) > 1:
            raise FcnDeployError(f"IMAGE: the images of one request differ in size {sizes}; send one size per request")
        x = np.ascontiguousarray(np.concatenate(batch), dtype=np.float32)
        return pb_utils.InferenceResponse([pb_utils.Tensor.from_dlpack(self.output_name, x.__dlpack__())])

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except Exception as e:  # one bad picture fails its own request only
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e))))
        return responses
