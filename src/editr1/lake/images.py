"""Images from the object store as PIL images (RGB), with a small in-process cache."""

from __future__ import annotations

import io
from collections import OrderedDict

from PIL import Image

from editr1.lake.objects import ObjectStore


class ImageLoader:
    """`loader(sha)` → PIL RGB image; keeps the most recent `capacity` images decoded."""

    def __init__(self, store: ObjectStore, capacity: int = 4096):
        self.store = store
        self.capacity = capacity
        self._cache: OrderedDict[str, Image.Image] = OrderedDict()

    def __call__(self, sha: str) -> Image.Image:
        image = self._cache.get(sha)
        if image is not None:
            self._cache.move_to_end(sha)
            return image
        image = Image.open(io.BytesIO(self.store.get(sha))).convert("RGB")
        self._cache[sha] = image
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return image
