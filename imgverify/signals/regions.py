"""Which parts of a picture get hashed: the whole frame and, when found, the photo inside it.

Reposts wrap the photo: flat borders (letterbox, padding), app chrome with text above and
buttons below (screenshots, stories), caption bars (memes), or other photos (collages).
Global hashes of the whole frame miss all of these, so the photo-like parts are found here
and hashed as extra parts of the query:

* ``trimmed``: the picture inside flat borders;
* ``photo``: the largest band of textured rows/columns, i.e. the photo inside text-and-flat
  chrome (screenshot, story frame, caption bar);
* ``band``: the photo under (or over) a caption bar, each edge judged by its own colour;
* ``tile-r-c``: the cells of a 2x2, 3x3, 1x2 or 2x1 collage when grid lines are found.

All detection works on a ~256 px grey copy and costs a few milliseconds.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from imgverify.signals.hashing import trim_uniform_borders

ANALYSIS_SIDE = 256


def _small_gray(rgb: Image.Image) -> np.ndarray:
    gray = rgb.convert("L")
    if max(gray.size) > ANALYSIS_SIDE:
        gray = gray.copy()
        gray.thumbnail((ANALYSIS_SIDE, ANALYSIS_SIDE), Image.Resampling.BOX)
    return np.asarray(gray, dtype=np.float32)


def _busy_mask(g: np.ndarray) -> np.ndarray:
    """Pixels with local texture (3x3 range above a small threshold)."""
    pad = np.pad(g, 1, mode="edge")
    stack = [pad[dy:dy + g.shape[0], dx:dx + g.shape[1]] for dy in range(3) for dx in range(3)]
    rng = np.max(stack, axis=0) - np.min(stack, axis=0)
    return rng > 10


def _longest_run(flags: np.ndarray, max_gap: int) -> tuple[int, int]:
    """Longest [start, end) run of True allowing gaps of up to `max_gap` False entries."""
    best = (0, 0)
    start = None
    gap = 0
    for i, f in enumerate(flags.tolist() + [False] * (max_gap + 1)):
        if f:
            if start is None:
                start = i
            gap = 0
            end = i + 1
            if end - start > best[1] - best[0]:
                best = (start, end)
        elif start is not None:
            gap += 1
            if gap > max_gap:
                start = None
    return best


def _photo_run(not_background: np.ndarray, textured: np.ndarray, max_gap: int,
               min_len: int) -> tuple[int, int] | None:
    """Longest run of lines that are not the background colour (gaps up to `max_gap`)
    with at least a quarter of them textured: a photo's smooth parts (sky, water, a wall)
    stay inside it, while text lines (mostly background) and solid bars (no texture) do
    not make a run of their own."""
    best: tuple[int, int] | None = None
    start = None
    gap = 0
    end = 0
    flags = not_background.tolist() + [False] * (max_gap + 1)
    for i, f in enumerate(flags):
        if f:
            if start is None:
                start = i
            gap = 0
            end = i + 1
            continue
        if start is None:
            continue
        gap += 1
        if gap > max_gap:
            if end - start >= min_len and textured[start:end].mean() >= 0.25 and (
                    best is None or end - start > best[1] - best[0]):
                best = (start, end)
            start = None
    return best


def _grow(flat_share: np.ndarray, start: int, end: int, limit: float = 0.97
          ) -> tuple[int, int]:
    """Extend [start, end) on each side through lines that are not (almost) all background,
    but only when such a line (a margin) is reached within the band's own length; a side that
    runs to the border without a margin keeps its place."""
    reach = end - start
    i = start
    while i > 0 and start - i < reach and flat_share[i - 1] < limit:
        i -= 1
    new_start = i if i > 0 and flat_share[i - 1] >= limit else start
    j = end
    n = len(flat_share)
    while j < n and j - end < reach and flat_share[j] < limit:
        j += 1
    new_end = j if j < n and flat_share[j] >= limit else end
    return new_start, new_end


#: Largest share of the page's colour in a photo row; in the second look for a narrower
#: photo (see `_photo_box`), the largest share of it inside the box found, and the least
#: share of the picture that box may cover (twice indented in a tall phone screenshot, a
#: landscape photo covers about a tenth of it).
ROW_PAGE_SHARE = 0.3
NARROW_ROW_PAGE_SHARE = 0.5
NARROW_MAX_PAGE = 0.1
NARROW_MIN_AREA = 0.06


def photo_region(rgb: Image.Image, gray: np.ndarray | None = None, cut: bool = False
                 ) -> tuple[int, int, int, int] | None:
    """Box of the photo inside chrome or caption bars, in `rgb` pixels; None if not framed.
    `gray`: `rgb`'s analysis copy when the caller has it (`find_parts` makes it once).
    `cut`: `rgb` is a region cut from a larger layout (the photo band of a screenshot of a
    screenshot), which often keeps a sliver of the outer app's page along a side: the
    page's colour is then read a little inside the edges, where that sliver cannot
    outvote the inner page."""
    return _photo_box(rgb, gray, cut)[0]


def _photo_box(rgb: Image.Image, gray: np.ndarray | None = None, cut: bool = False
               ) -> tuple[tuple[int, int, int, int] | None, bool]:
    """`photo_region`, and whether the box came from the narrow photo's wider row share."""
    g = _small_gray(rgb) if gray is None else gray
    h, w = g.shape
    if h < 32 or w < 32:
        return None, False
    busy = _busy_mask(g)
    # chrome and caption bars are mostly their flat background colour between the glyphs;
    # photo rows are rarely that exact colour, and some of them are textured
    edge = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    background = float(np.median(edge))
    if cut:  # see `cut`: a page read inside the edges counts only when it is a flat page
        k = max(1, min(h, w) // 50)
        inset = np.concatenate([g[k], g[-1 - k], g[:, k], g[:, -1 - k]])
        page = float(np.median(inset))
        if (np.abs(inset - page) <= 2).mean() >= 0.6:
            edge, background = inset, page
    flat = np.abs(g - background) <= 8

    def smooth(flags: np.ndarray) -> np.ndarray:
        return np.convolve(flags.astype(float), np.ones(3) / 3, mode="same") > 0.5

    exact = np.abs(g - background) <= 2  # the page itself, not a smooth blur near its colour
    flat_page = (np.abs(edge - background) <= 2).mean() >= 0.6

    def box(narrow: bool) -> tuple[int, int, int, int] | None:
        most = NARROW_ROW_PAGE_SHARE if narrow else ROW_PAGE_SHARE
        rows = _photo_run(smooth(flat.mean(axis=1) < most), busy.mean(axis=1) > 0.3,
                          max(1, h // 80), int(0.15 * h))
        if rows is None:
            return None
        y0, y1 = rows
        cols = _photo_run(smooth(flat[y0:y1].mean(axis=0) < ROW_PAGE_SHARE),
                          busy[y0:y1].mean(axis=0) > 0.3, max(1, w // 60), int(0.15 * w))
        if cols is None:
            return None
        x0, x1 = cols
        if narrow:
            # text lines as wide as the photo pass the wider share too (at this scale a
            # line of glyphs is a grey band), but blank lines part them: the photo is the
            # longest unbroken run of lines its columns fill
            a, b = _longest_run(flat[y0:y1, x0:x1].mean(axis=1) <= ROW_PAGE_SHARE, 0)
            y0, y1 = y0 + a, y0 + b
        if flat_page:
            # on a flat page (app screenshots), a photo edge that is partly the page colour
            # (white sky on a white page) fails the 30 % rule above: grow the box, within its
            # own columns/rows, until a line is all page colour (the margin around a photo).
            # Not on textured surrounds (stories over a blurred copy), where nothing would
            # stop it
            y0, y1 = _grow(exact[:, x0:x1].mean(axis=1), y0, y1)
            x0, x1 = _grow(exact[y0:y1].mean(axis=0), x0, x1)
        area = (y1 - y0) * (x1 - x0) / (h * w)
        if area > 0.92 or area < (NARROW_MIN_AREA if narrow else 0.12):
            return None
        if narrow and flat[y0:y1, x0:x1].mean() > NARROW_MAX_PAGE:
            return None
        return x0, y0, x1, y1

    # photo rows are mostly not the page's colour. A photo indented twice (a card inside a
    # card: a screenshot of a screenshot) leaves a third of each of its rows to the page, so
    # when no photo is found on a flat page, one half as wide as the page is looked for,
    # smaller too; such a box must then be filled (a dark photo on a dark page would
    # otherwise give its bright half)
    found = box(narrow=False)
    narrow = found is None and flat_page  # (a card in a card is on an app's flat page)
    if narrow:
        found = box(narrow=True)
    if found is None:
        return None, False
    x0, y0, x1, y1 = found
    sx, sy = rgb.width / w, rgb.height / h
    return (int(x0 * sx), int(y0 * sy), int(round(x1 * sx)), int(round(y1 * sy))), narrow


#: A caption bar is between these shares of the picture's height.
BAND_MIN, BAND_MAX = 0.04, 0.45


def caption_band(rgb: Image.Image, gray: np.ndarray | None = None
                 ) -> tuple[int, int, int, int] | None:
    """Box of the photo below (or above) a caption bar, in `rgb` pixels; None if there is
    none. Why not `photo_region`: it takes the background colour from all four edges, which
    for a meme are mostly the photo's own, so a bar on one side is not seen; here each of
    the top and the bottom is judged by its own first line.

    A bar is a run of lines from that edge that are largely the colour of its first line
    (a uniform line) and hold text: text lines keep much of their background between and
    around the glyphs, while the photo's lines are rarely that colour. It ends where
    several lines in a row are mostly not that colour, at the last line before them that
    is all bar colour. `gray` as for `photo_region`."""
    g = _small_gray(rgb) if gray is None else gray
    h, w = g.shape
    if h < 32 or w < 32:
        return None
    top, bottom = 0, h
    need = max(2, h // 40)  # photo lines in a row that end a bar
    for side in (0, 1):
        lines = g if side == 0 else g[::-1]
        first = lines[0]
        colour = float(np.median(first))
        if (np.abs(first - colour) <= 8).mean() < 0.95:
            continue  # the edge line is not a flat bar
        # close to the bar's own colour: a bright sky next to a white bar is not the bar
        share = (np.abs(lines - colour) <= 4).mean(axis=1)
        photo = share < 0.3
        end = None
        for i in range(h - need):
            if photo[i:i + need].all():
                end = i
                break
        if end is None:
            continue
        # the photo starts after the last line that is all bar colour (the bar's margin):
        # lines between it and the clear photo lines are the photo's own edge in a colour
        # close to the bar's (a pale road under a white bar)
        pure = np.flatnonzero(share[:end] >= 0.97)
        if pure.size:
            end = int(pure[-1]) + 1
        if not BAND_MIN * h <= end <= BAND_MAX * h:
            continue
        # a caption bar carries text: lines with strokes far from the bar's colour (a
        # photo's own dark or pale edge has none; flat borders without text are trimmed)
        strokes = (np.abs(lines[:end] - colour) > 96).mean(axis=1) >= 0.03
        if strokes.sum() < 2:
            continue
        if side == 0:
            top = end
        else:
            bottom = h - end
    if (top, bottom) == (0, h) or bottom - top < 0.5 * h:
        return None
    sy = rgb.height / h
    return (0, int(top * sy), rgb.width, int(round(bottom * sy)))


def _grid_lines(g: np.ndarray, axis: int) -> list[int]:
    """Positions (in `g` pixels) of straight full-length seams across `axis`."""
    if axis == 0:  # horizontal seams: compare consecutive rows
        diff = np.abs(np.diff(g, axis=0))  # (h-1, w)
    else:
        diff = np.abs(np.diff(g, axis=1)).T
    n = diff.shape[0] + 1
    strong = (diff > 18).mean(axis=1)  # share of the line that jumps
    found = []
    for frac in (1 / 3, 1 / 2, 2 / 3):
        centre = int(round(frac * n)) - 1
        lo, hi = max(0, centre - max(2, n // 40)), min(diff.shape[0], centre + max(2, n // 40) + 1)
        if hi <= lo:
            continue
        i = lo + int(np.argmax(strong[lo:hi]))
        if strong[i] > 0.6:
            found.append(i + 1)
    return found


def grid_tiles(rgb: Image.Image, gray: np.ndarray | None = None
               ) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Cells of a collage grid (2 or 3 per side), in `rgb` pixels; [] if no grid is seen.
    `gray` as for `photo_region`."""
    g = _small_gray(rgb) if gray is None else gray
    h, w = g.shape
    if h < 48 or w < 48:
        return []
    ys = _grid_lines(g, 0)
    xs = _grid_lines(g, 1)
    if not ys and not xs:
        return []

    def cuts(found: list[int], n: int) -> list[int]:
        thirds = [p for p in found if abs(p / n - 0.5) > 0.1]
        halves = [p for p in found if abs(p / n - 0.5) <= 0.1]
        if len(thirds) >= 2:
            return [0, *sorted(thirds)[:2], n]
        if halves:
            return [0, halves[0], n]
        return [0, n]

    ry, rx = cuts(ys, h), cuts(xs, w)
    if len(ry) == 2 and len(rx) == 2:
        return []
    sx, sy = rgb.width / w, rgb.height / h
    tiles = []
    for i in range(len(ry) - 1):
        for j in range(len(rx) - 1):
            box = (int(rx[j] * sx), int(ry[i] * sy), int(rx[j + 1] * sx), int(ry[i + 1] * sy))
            tiles.append((f"tile-{i}-{j}", box))
    return tiles


Box = tuple[int, int, int, int]


def find_parts(rgb: Image.Image, query: bool = False) -> list[tuple[str, Box]]:
    """[("full", whole box)] plus the photo-like parts found inside the picture.

    References store "full" and "trimmed" only; queries also try the photo band and collage
    tiles, which are cheap to hash and catch the framings global hashes miss.
    """
    parts: list[tuple[str, Box]] = [("full", (0, 0, rgb.width, rgb.height))]
    box = trim_uniform_borders(rgb)
    if box is not None:
        parts.append(("trimmed", box))
    if not query:
        return parts
    gray = _small_gray(rgb)  # one analysis copy for the three detectors (none changes it)
    region, narrow = _photo_box(rgb, gray)
    band = caption_band(rgb, gray)
    if narrow and region is not None and band is not None and _iou(region, band) >= 0.97:
        region = None  # the photo under a caption bar: a "band" says more (see below)
    if region is not None and (box is None or _iou(region, box) < 0.9):
        parts.append(("photo", region))
    # (a thin bar leaves a box close to the whole frame: only a near copy of a part is
    # left out)
    if band is not None and all(_iou(band, b) < 0.97 for _, b in parts):
        parts.append(("band", band))
    parts.extend(grid_tiles(rgb, gray))
    return parts


def picture_variants(rgb: Image.Image, query: bool = False) -> list[tuple[str, Image.Image]]:
    """The parts of `find_parts` as pictures."""
    return [(name, rgb if name == "full" else rgb.crop(box))
            for name, box in find_parts(rgb, query)]


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0
