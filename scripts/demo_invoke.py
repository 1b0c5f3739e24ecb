"""`make demo`, endpoint act: send held-out MNIST images to the live endpoint ``mnist``.

Three ways a user's client would: plain HTTP with a JSON body (what curl sends; the demo also
runs curl itself on a body file written here), an unmodified boto3 ``sagemaker-runtime``
client pointed at LoopML, and the binary npy body. Prints label, confidence and the truth.

    python scripts/demo_invoke.py DATA_PLANE_URL BODY_FILE
"""

from __future__ import annotations

import io
import sys

import boto3
import httpx
import numpy as np
import orjson

from loopml.core.settings import load_settings
from loopml.datasets.service import load_version
from loopml.platform import Platform


def held_out(n: int) -> tuple[np.ndarray, list[str]]:
    platform = Platform(load_settings(), create_schema=False)
    try:
        record = platform.datasets.get("mnist")
        content, splits = load_version(platform, record)
        part = content.take(splits["test"][:n])
        return np.asarray(part.images), [str(x) for x in part.labels]
    finally:
        platform.close()


def show(how: str, predictions: list[dict], truth: list[str]) -> None:
    print(f"{how}:")
    for p, t in zip(predictions, truth):
        mark = "ok" if p["label"] == t else "WRONG"
        print(f"  label {p['label']}  confidence {p['confidence']:.3f}  truth {t}  {mark}")


def main() -> int:
    url, body_file = sys.argv[1], sys.argv[2]
    images, truth = held_out(8)
    with open(body_file, "wb") as f:  # one image, for the curl call in scripts/demo.sh
        f.write(orjson.dumps({"instances": images[:1].tolist()}))
    body = orjson.dumps({"instances": images[:3].tolist()})

    r = httpx.post(f"{url}/endpoints/mnist/invocations", content=body,
                   headers={"content-type": "application/json"})
    r.raise_for_status()
    show("HTTP + JSON (3 images)", r.json()["predictions"], truth[:3])

    runtime = boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
                           aws_access_key_id="loopml", aws_secret_access_key="loopml")
    out = runtime.invoke_endpoint(EndpointName="mnist", ContentType="application/json",
                                  Body=orjson.dumps({"instances": images[3:6].tolist()}))
    show(f"boto3 sagemaker-runtime invoke_endpoint (variant {out['InvokedProductionVariant']})",
         orjson.loads(out["Body"].read())["predictions"], truth[3:6])

    buf = io.BytesIO()
    np.save(buf, images[6:8].astype(np.float32))
    r = httpx.post(f"{url}/endpoints/mnist/invocations", content=buf.getvalue(),
                   headers={"content-type": "application/x-npy"})
    r.raise_for_status()
    show("HTTP + npy (2 images, binary)", r.json()["predictions"], truth[6:8])
    return 0


if __name__ == "__main__":
    sys.exit(main())
