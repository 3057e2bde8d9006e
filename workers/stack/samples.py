"""Real sample photos bundled in scikit-image and scikit-learn: the demo's (and tests') media.

Never downloaded: both wheels ship these files."""
from __future__ import annotations

import numpy as np

# Colour photos from skimage.data; they are real photographs, not synthetic patterns.
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle", "hubble_deep_field",
                  "immunohistochemistry", "retina", "colorwheel", "cat", "logo", "page", "camera", "coins",
                  "moon", "horse", "text", "brick", "grass", "gravel")
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")


def photo(name: str) -> np.ndarray:
    """An RGB uint8 photo by name: a skimage.data function name, or china.jpg / flower.jpg."""
    if name in SKLEARN_PHOTOS:
        from sklearn.datasets import load_sample_image

        return np.ascontiguousarray(load_sample_image(name))
    import skimage.data

    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity)
        img = img[0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3]
    if img.dtype != np.uint8:
        img = (img * 255 if img.max() <= 1 else img).astype(np.uint8)
    return np.ascontiguousarray(img)


def colour_photos() -> list[str]:
    """Names of the distinct colour photographs available, sklearn's first."""
    return list(SKLEARN_PHOTOS) + ["astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle",
                                   "hubble_deep_field", "immunohistochemistry", "retina", "cat"]
