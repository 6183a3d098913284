"""Where the matched photo is in the submitted image, for the outline a report draws.

The fitted transform says where the archived photo's frame falls in the submitted image, but
not which part of that frame still shows the photo: a screenshot's app bar covers its top,
a caption bar sits under a crop, a collage cell is cropped to fill and its neighbours are
other photos. The matched keypoints only say where the photo surely is, and they bunch up
where the photo has texture (a whole sky can hold none).

So the outline starts from the box around the matched keypoints and grows, one row or
column at a time, through the pixels that still look like the archived photo warped into
place (grey levels after a linear fit for colour grades), up to the frame. It stops at app
chrome, caption bars and other photos, and runs on through a plain sky.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

Box = tuple[float, float, float, float]

#: Long side, in pixels, of the grey copies compared.
SIDE = 256
#: Rows (columns) looked at together when deciding to grow: one line of text over the photo
#: does not stop the outline.
WINDOW = 3


def _grey(picture: Image.Image, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(picture.convert("L").resize(size, Image.Resampling.BOX), dtype=np.float32)


def refine_region(query: Image.Image, reference: Image.Image, matrix: Sequence[Sequence[float]],
                  frame: Box, core: Box) -> Box:
    """`frame` trimmed to where the submitted image still shows the archived photo.

    `matrix` maps the reference to the query in normalised coordinates; `core` is a box
    (normalised, in the query) known to show the photo: the matched keypoints' box.
    """
    import cv2

    f = SIDE / max(query.size)
    qw, qh = max(8, round(query.width * f)), max(8, round(query.height * f))
    q = _grey(query, (qw, qh))
    rw, rh = reference.size
    r = np.asarray(reference.convert("L"), dtype=np.float32)
    m = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    a = np.diag([qw, qh, 1.0]) @ m @ np.diag([1.0 / rw, 1.0 / rh, 1.0])
    warped = cv2.warpAffine(r, a[:2], (qw, qh), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    valid = cv2.warpAffine(np.ones_like(r), a[:2], (qw, qh), flags=cv2.INTER_NEAREST,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0.5
    q = cv2.GaussianBlur(q, (0, 0), 1.0)
    warped = cv2.GaussianBlur(warped, (0, 0), 1.0)
    fx0, fy0 = max(0, int(frame[0] * qw)), max(0, int(frame[1] * qh))
    fx1, fy1 = min(qw, int(np.ceil(frame[2] * qw))), min(qh, int(np.ceil(frame[3] * qh)))
    x0, y0 = max(fx0, int(core[0] * qw)), max(fy0, int(core[1] * qh))
    x1, y1 = min(fx1, int(np.ceil(core[2] * qw))), min(fy1, int(np.ceil(core[3] * qh)))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return frame
    inside = valid[y0:y1, x0:x1]
    qs, rs = q[y0:y1, x0:x1][inside], warped[y0:y1, x0:x1][inside]
    if qs.size < 32:
        return frame
    # photometric fit on the part known to be the photo: q ~ gain * r + offset
    gain, offset = np.polyfit(rs, qs, 1) if float(rs.std()) > 1.0 else (0.0, float(qs.mean()))
    diff = np.abs(q - (gain * warped + offset))
    diff[~valid] = 255.0
    tolerance = max(12.0, 3.0 * float(np.median(diff[y0:y1, x0:x1][inside])))

    def agrees(block: np.ndarray) -> bool:
        return block.size > 0 and float(np.median(block)) <= tolerance

    grew = True
    while grew:
        grew = False
        if y0 > fy0 and agrees(diff[max(fy0, y0 - WINDOW):y0, x0:x1]):
            y0 -= 1
            grew = True
        if y1 < fy1 and agrees(diff[y1:min(fy1, y1 + WINDOW), x0:x1]):
            y1 += 1
            grew = True
        if x0 > fx0 and agrees(diff[y0:y1, max(fx0, x0 - WINDOW):x0]):
            x0 -= 1
            grew = True
        if x1 < fx1 and agrees(diff[y0:y1, x1:min(fx1, x1 + WINDOW)]):
            x1 += 1
            grew = True
    # within a row of the frame edge: the edge itself (resampling blurs the last pixels)
    x0, y0 = (fx0 if x0 - fx0 <= 1 else x0), (fy0 if y0 - fy0 <= 1 else y0)
    x1, y1 = (fx1 if fx1 - x1 <= 1 else x1), (fy1 if fy1 - y1 <= 1 else y1)
    return (x0 / qw, y0 / qh, x1 / qw, y1 / qh)


def keypoint_box(pairs: Sequence[tuple[tuple[float, float], tuple[float, float]]]) -> Box | None:
    """The box (normalised, in the query) around the query side of the inlier pairs."""
    if not pairs:
        return None
    pts = np.array([p[0] for p in pairs], dtype=np.float64)
    return (float(pts[:, 0].min()), float(pts[:, 1].min()),
            float(pts[:, 0].max()), float(pts[:, 1].max()))
