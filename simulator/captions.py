"""Captions from templates with synonyms, and the reverse: a prompt mapped to a look.

Captions teach the prompt-conditioned model which words go with which world. The last few
templates are held out (``split="heldout"``) so prompt following can be scored on paraphrases the
model never saw.
"""

from __future__ import annotations

import re

import numpy as np

from .themes import THEMES, Look

_TIME = {
    "day": ("", " in daylight", " during the day", " at midday", " on a bright day"),
    "sunset": (" at sunset", " at dusk", " in the evening light", " at golden hour"),
    "night": (" at night", " at midnight", " in the dead of night", " after dark"),
}
_TIME_INDOOR = {"day": ("",), "sunset": (" in the evening", " at dusk"),
                "night": (" at night", " at midnight", " after dark")}  # no sun under a ceiling
_FOG = {"clear": ("",), "foggy": (" in thick fog", " shrouded in mist", " in a heavy haze",
                                  " wrapped in fog")}
_WEATHER = {"none": ("",), "rain": (" in the rain", " during a rainstorm", " with rain falling"),
            "snow": (" in the snow", " with snow falling", " during a snowfall")}
_LAYOUT = {
    "maze": ("a maze of", "a labyrinth of", "winding passages of"),
    "rooms": ("the halls of", "rooms and corridors of", "the chambers of"),
    "caves": ("twisting tunnels of", "the cavernous depths of", "the irregular caves of"),
    "courtyard": ("the open courtyard of", "the wide plaza of", "the open grounds of"),
}
_TORCH = (" lit by {light}", " with flickering {light}", " where {light} burn")
_VIEW = ("first-person view of", "walking through", "exploring", "a player wanders through",
         "looking around")

# {a}: article + adjective + place, {p}: place, {x}: detail, {l}: layout phrase, {v}: view verb,
# {m}: all modifiers (time, weather, fog, torches in a random order).
_TEMPLATES = (
    "{a}{m}", "{v} {a}{m}", "{v} {l} {pd}{m}", "{a} with {x}{m}", "{l} {pd}{m}",
    "{v} {a} with {x}{m}", "inside {a}{m}", "{a}, {x}{m}", "a game level set in {a}{m}",
    "{a}{m}, first-person", "{v} {l} {pd} with {x}{m}", "a walk around {a}{m}",
    "a retro raycaster {p}{m}", "{a}{m}, seen from eye level", "wandering {l} {pd}{m}",
    "{a} full of {x}{m}", "a low-resolution {p}{m}", "{v} {a} past {x}{m}",
    "explore {a}{m}", "{a} to explore{m}", "a tiny world: {a}{m}", "{p} level{m}",
    "navigating {a}{m}", "{a} where you can walk around{m}",
    # held out: never used for training captions
    "a stroll through {a}{m}", "{pd} seen by a wanderer{m}", "somewhere in {a}{m}",
    "roaming {l} {pd}{m}", "the view inside {a}{m}", "a journey across {a}{m}",
)
N_TRAIN_TEMPLATES = 24


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def make_caption(look: Look, rng: np.random.Generator, split: str = "train") -> str:
    """A random templated caption of ``look``; ``split`` is "train", "heldout" or "all"."""
    theme = THEMES[look.theme]
    lo, hi = {"train": (0, N_TRAIN_TEMPLATES), "heldout": (N_TRAIN_TEMPLATES, len(_TEMPLATES)),
              "all": (0, len(_TEMPLATES))}[split]
    template = _TEMPLATES[rng.integers(lo, hi)]

    def pick(options: tuple[str, ...]) -> str:
        return options[rng.integers(len(options))]

    place = pick(theme.places)
    adjective = pick(theme.adjectives) + " " if rng.random() < 0.6 else ""
    times = _TIME if theme.outdoor else _TIME_INDOOR
    mods = [pick(times[look.time_of_day]), pick(_FOG[look.fog]), pick(_WEATHER[look.weather])]
    if look.torches:
        mods.append(pick(_TORCH).format(light=theme.light))
    order = rng.permutation(len(mods))
    text = template.format(
        a=_article(adjective + place), p=place, pd="the " + place, x=pick(theme.details),
        l=pick(_LAYOUT[look.layout]), v=pick(_VIEW), m="".join(mods[i] for i in order))
    return text[0].upper() + text[1:]


_WORD = re.compile(r"[a-z][a-z\-]*")
_MODIFIER_WORDS = {
    ("time_of_day", "sunset"): ("sunset", "dusk", "evening", "golden", "twilight", "sundown"),
    ("time_of_day", "night"): ("night", "midnight", "nighttime", "moonlit", "moon"),
    ("fog", "foggy"): ("fog", "foggy", "mist", "misty", "haze", "hazy"),
    ("weather", "rain"): ("rain", "rainy", "raining", "rainstorm", "storm", "wet"),
    ("weather", "snow"): ("snow", "snowy", "snowing", "snowfall", "blizzard"),
    ("torches", True): ("torch", "torches", "torchlit", "lantern", "lanterns", "brazier",
                        "braziers", "lamps", "beacons"),
    ("layout", "maze"): ("maze", "labyrinth", "labyrinthine"),
    ("layout", "caves"): ("cave", "caves", "cavern", "caverns", "tunnels"),
    ("layout", "courtyard"): ("courtyard", "plaza", "square"),
}


def match_prompt(prompt: str, default_theme: str = "stone_dungeon") -> Look:
    """The look a free-text prompt asks for: the theme whose words it shares most, plus modifiers.

    Ties and prompts that name no theme fall back to ``default_theme``; modifiers a prompt does
    not mention keep their defaults (day, clear, no weather, no torches, rooms).
    """
    words = _WORD.findall(prompt.lower())
    text = " " + " ".join(words) + " "
    scores = {}
    for name, theme in THEMES.items():
        phrases = {p.lower() for p in theme.places} | set(theme.keywords)
        scores[name] = sum(2 if " " in p else 1 for p in phrases if f" {p} " in text)
    best = max(scores.values())
    tied = [name for name, score in scores.items() if score == best]
    theme = default_theme if best == 0 or default_theme in tied else tied[0]
    found: dict = {}
    for (key, value), vocab in _MODIFIER_WORDS.items():
        if key not in found and any(w in vocab for w in words):
            found[key] = value
    if not THEMES[theme].outdoor:
        found.pop("weather", None)
    return Look(theme, **found)

