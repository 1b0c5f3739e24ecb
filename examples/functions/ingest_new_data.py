"""A LoopML function: new labelled data arrived → a new dataset version → start retraining.

Attach it to an object trigger on the folder where labelled data lands::

    loopml functions create ingest-mnist --file examples/functions/ingest_new_data.py \
        --env DATASET=mnist --env WORKFLOW=retrain-mnist --timeout 600 \
        --permission datasets:write --permission workflows:retrain-mnist:start
    loopml triggers create mnist-new-data --objects incoming/mnist/ --suffix .zip --function ingest-mnist

With auth on, ``context.client`` holds a token that may do exactly those two things (its
execution role), for as long as the invocation lasts. Each new object (here a zip of PNGs in one folder per class, ``7/img-001.png``) fires once. The
event is shaped like an S3 event record; ``uri`` is where the object can be read from.
"""

from __future__ import annotations

import os


def handler(event, context):
    record = event["Records"][0]
    uri = event.get("uri") or record["s3"]["object"]["key"]
    dataset = os.environ.get("DATASET", "mnist")
    workflow = os.environ.get("WORKFLOW", f"retrain-{dataset}")
    context.logger.info("new object %s (%s bytes)", uri, record["s3"]["object"].get("size"))

    # extend=True: the newest version's rows plus the new ones, as a new content-addressed version
    version = context.client.add_dataset(dataset, uri, extend=True)
    ref = f"{dataset}:{version['version']}"
    context.logger.info("dataset %s registered (%s rows)", ref, version.get("rows"))

    execution = context.client.start_execution(workflow, {"dataset": ref, "trigger_object": uri})
    context.logger.info("started %s execution %s", workflow, execution["id"])
    return {"dataset": ref, "rows": version.get("rows"), "execution": execution["id"]}
