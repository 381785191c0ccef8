"""Peer for scripts/bench_serve.py: KServe's Python model server around Transformers' image-classification
pipeline, taking KServe v1 requests ({"instances": [{"image": {"b64": …}}]}).

    python kserve_model.py MODEL_DIR PORT
"""
import base64
import io
import sys

import kserve
import torch
from PIL import Image
from transformers import pipeline

torch.set_num_threads(2)


class Classifier(kserve.Model):
    def __init__(self, name, directory):
        super().__init__(name)
        self.classify = pipeline("image-classification", model=directory, device="cpu")
        self.ready = True

    def predict(self, payload, headers=None):
        images = [Image.open(io.BytesIO(base64.b64decode(i["image"]["b64"]))) for i in payload["instances"]]
        return {"predictions": [self.classify(image, top_k=5) for image in images]}


if __name__ == "__main__":
    kserve.ModelServer(http_port=int(sys.argv[2]), grpc_port=int(sys.argv[2]) + 1, workers=1).start([Classifier("m", sys.argv[1])])
