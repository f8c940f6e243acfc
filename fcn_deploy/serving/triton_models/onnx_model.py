"""Triton Python-backend model: an fcn-deploy ONNX through fcn-deploy's own ONNX Runtime backend (CPU servers).

Requests that arrive together (dynamic batching) and share H x W run as one ONNX Runtime batch; each request gets
its own slice of every output the model card declares, exactly as the graph returns it.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # the fcn_deploy copy shipped beside this file

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from fcn_deploy.runtime.ort_backend import OrtBackend  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        threads = int(config.get("parameters", {}).get("intra_op_threads", {}).get("string_value", "0") or 0)
        self.backend = OrtBackend(os.path.join(HERE, "model.onnx"), device="cpu", threads=threads or None)
        self.input_name = config["input"][0]["name"]
        self.output_names = [o["name"] for o in config["output"]]

    def execute(self, requests):
        inputs = [np.from_dlpack(pb_utils.get_input_tensor_by_name(r, self.input_name)) for r in requests]
        errors = {}
        groups = {}
        for i, x in enumerate(inputs):
            groups.setdefault(x.shape[1:], []).append(i)
        outputs = [None] * len(requests)
        for members in groups.values():
            batch = np.ascontiguousarray(np.concatenate([inputs[i] for i in members]), dtype=np.float32)
            try:
                values = self.backend.session.run(self.output_names, {self.input_name: batch})
            except Exception as e:
                for i in members:
                    errors[i] = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                continue
            start = 0
            for i in members:
                n = inputs[i].shape[0]
                outputs[i] = [np.ascontiguousarray(v[start : start + n]) for v in values]
                start += n
        responses = []
        for i in range(len(requests)):
            if i in errors:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(errors[i])))
            else:
                pairs = zip(self.output_names, outputs[i], strict=True)
                tensors = [pb_utils.Tensor.from_dlpack(n, v.__dlpack__()) for n, v in pairs]
                responses.append(pb_utils.InferenceResponse(tensors))
        return responses

    def finalize(self):
        self.backend.close()
