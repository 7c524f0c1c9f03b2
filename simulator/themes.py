"""Themes, modifiers and the attribute vector that describes an episode's look.

A theme fixes the textures, sprites, liquid and sky of a world; modifiers (time of day, fog,
weather, torches) and the map layout vary on top of it. The attribute vector is the one-hot
concatenation of all of them, saved with every frame so models can be supervised on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Theme:
    """A visual world style and the words used to describe it."""

    name: str
    outdoor: bool  # a sky (and weather) instead of a ceiling
    places: tuple[str, ...]  # noun phrases, the first is the canonical title
    adjectives: tuple[str, ...]
    details: tuple[str, ...]  # things one sees there, for captions
    light: str  # what the torch modifier places: "torches", "lanterns", ...
    keywords: tuple[str, ...]  # extra words a prompt may use for this theme

    @property
    def title(self) -> str:
        return self.places[0]


THEMES: dict[str, Theme] = {t.name: t for t in (
    Theme("stone_dungeon", False,
          ("stone dungeon", "dungeon", "underground crypt", "dark catacomb", "castle dungeon"),
          ("dank", "ancient", "gloomy", "mossy", "old"),
          ("stone pillars", "wooden barrels", "green slimes", "murky pools"),
          "torches", ("dungeon", "crypt", "catacomb", "stone", "prison", "cellar", "medieval")),
    Theme("brick_castle", True,
          ("brick castle", "castle courtyard", "red brick fortress", "medieval castle", "castle keep"),
          ("grand", "old", "sunlit", "royal", "sturdy"),
          ("red banners", "wooden crates", "a moat", "purple creatures"),
          "braziers", ("castle", "brick", "fortress", "keep", "knight", "kingdom", "banner")),
    Theme("ice_cave", False,
          ("ice cave", "frozen cavern", "glacier cave", "icy grotto", "snow cave"),
          ("frozen", "glittering", "frosty", "cold", "icy"),
          ("glowing crystals", "snow mounds", "frigid pools", "furry yetis"),
          "blue torches", ("ice", "icy", "frozen", "glacier", "snow", "winter", "cold", "crystal")),
    Theme("desert_ruins", True,
          ("desert ruins", "ancient desert ruins", "sandstone ruins", "lost desert city",
           "ruined oasis temple"),
          ("sun-baked", "ancient", "crumbling", "sandy", "forgotten"),
          ("palm trees", "clay urns", "an oasis", "scarab beetles"),
          "braziers", ("desert", "sand", "sandstone", "ruins", "egypt", "pyramid", "oasis", "dune")),
    Theme("neon_city", True,
          ("neon city", "cyberpunk street", "neon-lit alley", "futuristic city", "neon metropolis"),
          ("glowing", "rain-slick", "electric", "vibrant", "futuristic"),
          ("street lamps", "vending machines", "a glowing canal", "patrol drones"),
          "neon lamps", ("neon", "cyberpunk", "city", "street", "urban", "synthwave", "alley")),
    Theme("hedge_garden", True,
          ("hedge garden", "garden maze", "hedge labyrinth", "formal garden", "green park"),
          ("lush", "peaceful", "leafy", "blooming", "green"),
          ("topiary trees", "flower bushes", "a pond", "wild rabbits"),
          "lanterns", ("garden", "hedge", "park", "green", "grass", "flowers", "topiary")),
    Theme("lava_temple", False,
          ("lava temple", "volcanic temple", "fire temple", "obsidian shrine", "molten sanctum"),
          ("fiery", "scorching", "volcanic", "infernal", "smouldering"),
          ("obsidian obelisks", "skull piles", "rivers of lava", "fire imps"),
          "braziers", ("lava", "fire", "volcano", "volcanic", "magma", "hell", "molten", "temple")),
    Theme("scifi_station", False,
          ("sci-fi station", "space station", "research station", "starship corridor",
           "orbital base"),
          ("sleek", "futuristic", "sterile", "humming", "high-tech"),
          ("reactor pillars", "cargo crates", "coolant pools", "hovering drones"),
          "beacons", ("sci-fi", "scifi", "space", "station", "spaceship", "starship", "robot",
                      "laboratory", "futuristic")),
)}
THEME_NAMES: tuple[str, ...] = tuple(THEMES)

TIMES_OF_DAY = ("day", "sunset", "night")
FOGS = ("clear", "foggy")
WEATHERS = ("none", "rain", "snow")
LAYOUTS = ("maze", "rooms", "caves", "courtyard")

ATTRIBUTE_NAMES: tuple[str, ...] = (
    tuple(f"theme={t}" for t in THEME_NAMES) + tuple(f"time={t}" for t in TIMES_OF_DAY)
    + tuple(f"fog={f}" for f in FOGS) + tuple(f"weather={w}" for w in WEATHERS)
    + ("torches",) + tuple(f"layout={l}" for l in LAYOUTS))
N_ATTRIBUTES = len(ATTRIBUTE_NAMES)


@dataclass(frozen=True)
class Look:
    """Everything that decides what an episode looks like at one moment, besides the map."""

    theme: str
    time_of_day: str = "day"
    fog: str = "clear"
    weather: str = "none"
    torches: bool = False
    layout: str = "rooms"

    def __post_init__(self) -> None:
        for value, allowed in ((self.theme, THEME_NAMES), (self.time_of_day, TIMES_OF_DAY),
                               (self.fog, FOGS), (self.weather, WEATHERS), (self.layout, LAYOUTS)):
            if value not in allowed:
                raise ValueError(f"{value!r} is not one of {allowed}")
        if self.weather != "none" and not THEMES[self.theme].outdoor:
            raise ValueError(f"weather needs an outdoor theme, {self.theme} has a ceiling")

    @property
    def theme_index(self) -> int:
        return THEME_NAMES.index(self.theme)

    @property
    def palette(self) -> int:
        """Index of the (theme, time of day) texture palette in the atlas."""
        return self.theme_index * len(TIMES_OF_DAY) + TIMES_OF_DAY.index(self.time_of_day)

    def attributes(self) -> torch.Tensor:
        """The float32 one-hot attribute vector, laid out as ATTRIBUTE_NAMES."""
        on = {f"theme={self.theme}", f"time={self.time_of_day}", f"fog={self.fog}",
              f"weather={self.weather}", f"layout={self.layout}"}
        if self.torches:
            on.add("torches")
        return torch.tensor([float(n in on) for n in ATTRIBUTE_NAMES])

    def with_theme(self, theme: str) -> "Look":
        """The same modifiers on another theme (weather is dropped indoors)."""
        weather = self.weather if THEMES[theme].outdoor else "none"
        return Look(theme, self.time_of_day, self.fog, weather, self.torches, self.layout)

    def to_dict(self) -> dict:
        return {"theme": self.theme, "time_of_day": self.time_of_day, "fog": self.fog,
                "weather": self.weather, "torches": self.torches, "layout": self.layout}
