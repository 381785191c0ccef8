"""Peer for scripts/bench_serve.py: a TorchServe handler around Transformers' image-classification pipeline.
The model directory travels in the archive as extra files."""
import io
import os

import torch
from PIL import Image
from transformers import pipeline
from ts.torch_handler.base_handler import BaseHandler


class Handler(BaseHandler):
    def initialize(self, context):
        torch.set_num_threads(2)
        self.classify = pipeline("image-classification", model=context.system_properties["model_dir"], device="cpu")
        self.initialized = True

    def handle(self, data, context):
        images = [Image.open(io.BytesIO(row.get("data") or row.get("body"))) for row in data]
        return [self.classify(image, top_k=5) for image in images]
