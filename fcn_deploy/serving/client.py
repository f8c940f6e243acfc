"""A model on a Triton server behind the one Backend contract: `triton://HOST:PORT/MODEL` (HTTP) or
`triton+grpc://HOST:PORT/MODEL` (gRPC), optionally with `?timeout=SECONDS&retries=N`. The card comes from the served config's `fcn_deploy_card` parameter, so
`infer`, `profile`, `evaluate` and `report` treat a server exactly like a local model.

Every request has a timeout; a request that fails because the server cannot be reached reconnects with back-off
(like the live sources) and, after `retries` tries, fails with one line naming the server. A request the server
answers with an error is not retried.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from fcn_deploy.core.backend import Backend
from fcn_deploy.core.card import ModelCard
from fcn_deploy.core.errors import FcnDeployError, MissingDependencyError
from fcn_deploy.core.outputs import normalize_outputs

SCHEMES = {"triton": ("http", 8000), "triton+http": ("http", 8000), "triton+grpc": ("grpc", 8001)}
PREFIXES = tuple(f"{s}://" for s in SCHEMES)


def is_triton_url(text: Any) -> bool:
    return isinstance(text, str) and text.startswith(PREFIXES)


def url_options(url: str) -> dict[str, float]:
    """`?timeout=SECONDS&retries=N` on a Triton URL (defaults 30 s, 3 reconnect tries)."""
    out: dict[str, float] = {}
    for key, values in parse_qs(urlsplit(url).query, keep_blank_values=True).items():
        if key not in ("timeout", "retries"):
            raise FcnDeployError(f"{url}: unknown option {key!r}; a Triton URL takes ?timeout=SECONDS&retries=N")
        try:
            value = float(values[-1])
        except ValueError:
            raise FcnDeployError(f"{url}: {key}={values[-1]!r} is not a number") from None
        if value < 0 or (key == "timeout" and value == 0):
            raise FcnDeployError(f"{url}: {key} must be positive")
        out[key] = value
    return out


def parse_url(url: str) -> tuple[str, str, str]:
    """-> (protocol, host:port, model)."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise FcnDeployError(f"{url}: not a Triton URL; write triton://HOST:PORT/MODEL (or triton+grpc://...)")
    protocol, default_port = SCHEMES[parts.scheme]
    model = parts.path.strip("/")
    if not parts.hostname or not model or "/" in model:
        raise FcnDeployError(f"{url}: write triton://HOST:PORT/MODEL, e.g. triton://127.0.0.1:8000/fcn8s")
    try:
        port = parts.port or default_port
    except ValueError:
        raise FcnDeployError(f"{url}: the port is not a number") from None
    return protocol, f"{parts.hostname}:{port}", model


def _modules(protocol: str) -> Any:
    try:
        if protocol == "grpc":
            import tritonclient.grpc as client
        else:
            import tritonclient.http as client
        from tritonclient.utils import InferenceServerException
    except ImportError as e:
        raise MissingDependencyError(
            f"tritonclient is not installed ({e}); pip install 'fcn-deploy[serve]' to talk to a Triton server"
        ) from None
    return client, InferenceServerException


class TritonBackend(Backend):
    name = "triton"

    def __init__(self, url: str, timeout: float | None = None, retries: int | None = None, backoff: float = 0.5) -> None:
        self.url = url
        self.protocol, self.address, self.model = parse_url(url)
        options = url_options(url)
        self.timeout = float(timeout if timeout is not None else options.get("timeout", 30.0))
        self.retries = int(retries if retries is not None else options.get("retries", 3))
        self.backoff = float(backoff)
        self.reconnects = 0
        self._mod, self._server_error = _modules(self.protocol)
        self._client = self._connect()
        config = self._call(self._model_config)
        params = config.get("parameters", {})
        card_json = params.get("fcn_deploy_card", {}).get("string_value")
        if not card_json:
            raise FcnDeployError(
                f"{url}: the served model has no fcn_deploy_card parameter; serve a repository written by "
                "`fcn-deploy package --format triton`"
            )
        self.card = ModelCard.from_json(card_json, f"{url} model card")
        inputs = [i["name"] for i in config.get("input", [])]
        if inputs != [self.card.input_name]:
            raise FcnDeployError(
                f"{url}: takes inputs {inputs}, not the network input {self.card.input_name!r}; address the network "
                "model (NAME), not NAME_ensemble"
            )
        served = {o["name"] for o in config.get("output", [])}
        self._outputs = [(o.name, o.kind) for o in self.card.outputs if o.name in served]
        if not self._outputs:
            raise FcnDeployError(f"{url}: serves none of the card's outputs {[o.name for o in self.card.outputs]}")
        self.max_batch_size = int(config.get("max_batch_size", 0))

    # --- connection ------------------------------------------------------------------------------------
    def _connect(self) -> Any:
        if self.protocol == "grpc":
            return self._mod.InferenceServerClient(self.address)
        return self._mod.InferenceServerClient(
            self.address, connection_timeout=self.timeout, network_timeout=self.timeout
        )

    def _model_config(self) -> dict[str, Any]:
        if self.protocol == "grpc":
            return self._client.get_model_config(self.model, as_json=True, client_timeout=self.timeout)["config"]
        return self._client.get_model_config(self.model)

    def _server_live(self) -> bool:
        try:
            if self.protocol == "grpc":
                return bool(self._client.is_server_live(client_timeout=min(self.timeout, 2.0)))
            return bool(self._client.is_server_live())
        except Exception:
            return False

    def _call(self, fn: Any) -> Any:
        """fn() with reconnect and back-off while the server cannot be reached; a server's own error is final."""
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except Exception as e:
                reason = _reason(e)
                if isinstance(e, self._server_error) and self._server_live():
                    raise FcnDeployError(f"{self.url}: the server refused the request ({reason})") from None
                if attempt == self.retries:
                    raise FcnDeployError(
                        f"{self.url}: no answer from the Triton server after {self.retries + 1} "
                        f"{'try' if self.retries == 0 else 'tries'} ({reason}); "
                        "check that it runs (`fcn-deploy serve REPO`) and the address"
                    ) from None
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            self.reconnects += 1
            try:
                self._client.close()
            except Exception:  # noqa: S110 - the old connection is gone either way
                pass
            self._client = self._connect()
        raise AssertionError("unreachable")

    # --- the contract ----------------------------------------------------------------------------------
    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise FcnDeployError(f"{self.url}: expected an N x 3 x H x W batch, got {list(batch.shape)}")
        if self.max_batch_size and batch.shape[0] > self.max_batch_size:
            parts = [self.run(batch[i : i + self.max_batch_size]) for i in range(0, len(batch), self.max_batch_size)]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return self._call(lambda: self._infer(batch))

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        m = self._mod
        inp = m.InferInput(self.card.input_name, list(batch.shape), "FP32")
        if self.protocol == "grpc":
            inp.set_data_from_numpy(batch)
            outs = [m.InferRequestedOutput(n) for n, _ in self._outputs]
            result = self._client.infer(self.model, [inp], outputs=outs, client_timeout=self.timeout)
        else:
            inp.set_data_from_numpy(batch, binary_data=True)
            outs = [m.InferRequestedOutput(n, binary_data=True) for n, _ in self._outputs]
            result = self._client.infer(self.model, [inp], outputs=outs, timeout=int(self.timeout * 1e6))
        return normalize_outputs({kind: result.as_numpy(n) for n, kind in self._outputs})

    @property
    def output_kinds(self) -> tuple[str, ...]:
        return tuple(kind for _, kind in self._outputs if kind != "labels")

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "url": self.url, "protocol": self.protocol, "model": self.model,
                "timeout_s": self.timeout, "reconnects": self.reconnects}  # fmt: skip

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: S110 - closing a dead connection
            pass


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__
