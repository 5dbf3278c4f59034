"""Run by the clients' own venv (``.venv-clients``, requirements/oip-clients.txt), never by the project's:
the Open Inference Protocol's clients, unmodified, against a running service. It imports no project code.

    python tests/oip_clients.py URL MODEL INPUTS.npy OUT.json [INFERENCE_KEY] [MANAGEMENT_KEY]

Writes what each client read (flags, metadata, every output as a list) to OUT.json for the test to check.
"""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np


def triton(url: str, model: str, x: np.ndarray, keys: dict, management: dict) -> dict:
    import tritonclient.http as http

    headers = keys  # infer gets a copy each time: tritonclient writes Inference-Header-Content-Length into it

    client = http.InferenceServerClient(url.removeprefix("http://"))
    found = {
        "live": client.is_server_live(headers=headers),
        "ready": client.is_server_ready(headers=headers),
        "model_ready": client.is_model_ready(model, headers=headers),
        "server": client.get_server_metadata(headers=headers),
        "metadata": client.get_model_metadata(model, headers=headers),
    }
    binary = http.InferInput("input", list(x.shape), "FP32")
    binary.set_data_from_numpy(x)  # the client's default: binary tensors both ways
    result = client.infer(model, [binary], headers=dict(keys), request_id="triton-1")
    found["binary"] = {o["name"]: result.as_numpy(o["name"]).tolist() for o in result.get_response()["outputs"]}
    found["binary_id"] = result.get_response().get("id")
    plain = http.InferInput("input", list(x.shape), "FP32")
    plain.set_data_from_numpy(x, binary_data=False)
    asked = [http.InferRequestedOutput("label", binary_data=False), http.InferRequestedOutput("units/hidden")]
    result = client.infer(model, [plain], outputs=asked, headers=dict(keys), parameters={"detail": "units"})
    found["asked"] = {o["name"]: result.as_numpy(o["name"]).tolist() for o in result.get_response()["outputs"]}
    try:
        client.infer(model, [binary], headers={})
        found["without_key"] = "answered"
    except Exception as exc:
        found["without_key"] = str(exc)
    if management:
        found["index"] = client.get_model_repository_index(headers=management)
        client.load_model(model, headers=management)  # the latest version, already serving: a no-op
        found["loaded"] = client.is_model_ready(model, headers=headers)
    return found


async def kserve(url: str, model: str, x: np.ndarray, headers: dict) -> dict:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    client = InferenceRESTClient(RESTConfig(protocol="v2"))
    try:
        found = {
            "live": await client.is_server_live(url, headers=headers),
            "ready": await client.is_server_ready(url, headers=headers),
            "model_ready": await client.is_model_ready(url, model, headers=headers),
        }
        for binary in (False, True):
            tensor = InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=binary)
            request = InferRequest(model_name=model, infer_inputs=[tensor], request_id=f"kserve-{binary}")
            response = await client.infer(url, request, model_name=model, headers=dict(headers))
            found["binary" if binary else "json"] = {o.name: o.as_numpy().tolist() for o in response.outputs}
            found[f"id_{binary}"] = response.id
    finally:
        await client.close()
    return found


def main() -> None:
    url, model, inputs, out, *keys = sys.argv[1:]
    x = np.load(inputs).astype(np.float32)
    headers = {"Authorization": f"Bearer {keys[0]}"} if keys and keys[0] else {}
    management = {"Authorization": f"Bearer {keys[1]}"} if len(keys) > 1 else {}
    found = {
        "triton": triton(url, model, x, headers, management),
        "kserve": asyncio.run(kserve(url, model, x, headers)),
    }
    with open(out, "w") as handle:
        json.dump(found, handle)


if __name__ == "__main__":
    main()
