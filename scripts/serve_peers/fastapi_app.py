"""Peer for scripts/bench_serve.py: a FastAPI + uvicorn app around Transformers' image-classification pipeline.

    python fastapi_app.py MODEL_DIR PORT
"""
import io
import sys

import torch
import uvicorn
from fastapi import FastAPI, Request
from PIL import Image
from transformers import pipeline

torch.set_num_threads(2)
classify = pipeline("image-classification", model=sys.argv[1], device="cpu")
app = FastAPI()


@app.post("/classify")
async def classify_image(request: Request, top_k: int = 5):
    image = Image.open(io.BytesIO(await request.body()))
    return classify(image, top_k=top_k)


@app.get("/health")
def health():
    return {"ok": True}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
