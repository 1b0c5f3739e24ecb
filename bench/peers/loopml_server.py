"""LoopML's data plane for bench/serving.py: one bundle behind ``create_data_plane``.

    python bench/peers/loopml_server.py BUNDLE_FOLDER PORT [ENDPOINT_NAME]

Loads the bundle with ``ModelHost.load`` (runtime "auto" → ONNX when exported, one intra-op
thread, default micro-batcher, warm-up of every bucket) and serves it on 127.0.0.1:PORT under
uvicorn with uvloop + httptools, no access log: ``POST /endpoints/NAME/invocations``.
A stand-in until ``loopml`` itself starts endpoints; the bench only needs the URL.
"""

from __future__ import annotations

import sys

import uvicorn

from loopml.serving.app import create_data_plane
from loopml.serving.host import ModelHost


def main() -> None:
    folder, port = sys.argv[1], int(sys.argv[2])
    name = sys.argv[3] if len(sys.argv) > 3 else "mnist"
    host = ModelHost.load(folder, name=name)
    app = create_data_plane({name: host})
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                proxy_headers=False, server_header=False, date_header=False,
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
