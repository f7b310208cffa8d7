"""Named synthetic worlds: which areas exist, what they look like and when they were imaged."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

Biome = Literal["alpine", "temperate", "tropical_coast", "arctic"]


@dataclass(frozen=True)
class Area:
    """A rectangle of the synthetic world that holds data; everything else is nodata."""

    name: str
    bbox: tuple[float, float, float, float]  # min_lon, min_lat, max_lon, max_lat
    biome: Biome
    first_date: dt.date  # first Sentinel-2 acquisition; more follow every `revisit_days`
    n_dates: int = 3
    revisit_days: int = 5
    planetary_computer: bool = True  # also listed in the Planetary Computer dialect collection

    def dates(self) -> list[dt.date]:
        return [
            self.first_date + dt.timedelta(days=self.revisit_days * i) for i in range(self.n_dates)
        ]


_SUMMER = dt.date(2021, 7, 3)
_AUSTRAL = dt.date(2021, 8, 12)

PRESETS: dict[str, tuple[Area, ...]] = {
    # Smallest world with one area: used by tests that build worlds repeatedly.
    "tiny": (Area("tiny-valley", (14.40, 46.30, 14.45, 46.34), "alpine", _SUMMER, n_dates=2),),
    # The demo: three UTM zones, one area straddling the 32/33 zone boundary (12 deg E, which is
    # also a WorldCover tile edge), one in the southern hemisphere, one in the far north.
    "demo": (
        Area("dolomites", (11.95, 46.55, 12.05, 46.62), "alpine", _SUMMER),
        Area("sao-luis", (-44.40, -2.62, -44.32, -2.54), "tropical_coast", _AUSTRAL),
        Area("finnmark", (25.00, 69.40, 25.20, 69.47), "arctic", _SUMMER, planetary_computer=False),
    ),
    # Scale tests: thousands of patches over many zones.
    "large": (
        Area("dolomites", (11.70, 46.40, 12.30, 46.90), "alpine", _SUMMER),
        Area("po-plain", (9.60, 45.00, 10.20, 45.40), "temperate", _SUMMER),
        Area("pannonia", (18.50, 46.60, 19.10, 47.00), "temperate", _SUMMER),
        Area("sao-luis", (-44.50, -2.80, -44.10, -2.40), "tropical_coast", _AUSTRAL),
        Area("sundarbans", (89.00, 21.70, 89.40, 22.10), "tropical_coast", dt.date(2021, 2, 6)),
        Area("finnmark", (24.60, 69.30, 25.60, 69.60), "arctic", _SUMMER),
        Area("svalbard", (15.20, 78.10, 16.40, 78.30), "arctic", _SUMMER),
        Area("patagonia", (-71.60, -41.30, -71.00, -40.90), "alpine", dt.date(2021, 1, 10)),
    ),
}


def preset_areas(name: str) -> tuple[Area, ...]:
    try:
        return PRESETS[name]
    except KeyError as e:
        raise ValueError(
            f"unknown world preset {name!r}; choose one of {', '.join(PRESETS)}"
        ) from e
