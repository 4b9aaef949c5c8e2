"""Rebuild facekit/assets/canonical_face.npy, the frontal template used by rotation alignment.

FaceMesh on scikit-image's astronaut photo (public domain), normalised in ``kit``
mode, then turned into an anatomical frame: the line between the outer eye
corners (33 → 263) horizontal, forehead (10) to chin (152) vertical, depth
towards the camera negative (MediaPipe's convention).  Run:
    .venv/bin/python tools/make_canonical_face.py
"""
import numpy as np
from skimage import data

from facekit.extract import face_mesh, find_faces, to_pixels
from facekit.normalize import NormalizeSettings, normalize
from facekit.paths import ASSETS_DIR

rgb = data.astronaut()
faces = find_faces(rgb, face_mesh(True, 1))
lm = normalize(to_pixels(faces[0], rgb.shape[1], rgb.shape[0]), NormalizeSettings("kit"))
x = lm[263] - lm[33]
x /= np.linalg.norm(x)
y = lm[152] - lm[10]
y -= x * (y @ x)
y /= np.linalg.norm(y)
z = np.cross(x, y)
frame = np.stack([x, y, z], axis=1)  # columns: the face's own axes
template = (lm @ frame).astype(np.float32)
np.save(ASSETS_DIR / "canonical_face.npy", template)
print("saved", template.shape, "nose tip", template[1])
