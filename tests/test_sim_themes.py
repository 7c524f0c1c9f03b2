"""Simulator themes: every theme renders, themes are separable by colour, captions and prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simulator import THEME_NAMES, THEMES, EpisodeSpec, Look, World, make_caption, \
    match_prompt, rollout
from simulator.constants import SEG_CEILING, SEG_SKY
from simulator.themes import ATTRIBUTE_NAMES, N_ATTRIBUTES


pytestmark = pytest.mark.usefixtures("one_thread")


def hsv_histogram(rgb: torch.Tensor, hue_bins: int = 24, sat_bins: int = 4,
                  val_bins: int = 4) -> torch.Tensor:
    """Normalised joint hue/saturation/value histogram of uint8 [N, H, W, 3] frames."""
    x = rgb.float() / 255
    hi, lo = x.max(-1).values, x.min(-1).values
    span = hi - lo + 1e-6
    r, g, b = x.unbind(-1)
    hue = torch.where(hi == r, ((g - b) / span) % 6,
                      torch.where(hi == g, (b - r) / span + 2, (r - g) / span + 4)) / 6
    sat = (hi - lo) / (hi + 1e-6)
    q = lambda v, n: (v * n).long().clamp(0, n - 1)  # noqa: E731
    index = (q(hue, hue_bins) * sat_bins + q(sat, sat_bins)) * val_bins + q(hi, val_bins)
    counts = torch.stack([torch.bincount(i.flatten(), minlength=hue_bins * sat_bins * val_bins)
                          for i in index]).float()
    return counts / counts.sum(1, keepdim=True)


def theme_frames(seeds: range, frames: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame per (theme, seed): random modifiers and layout, after a few policy steps."""
    specs = [EpisodeSpec.from_seed(s, switch_probability=0.0, theme=t) for t in THEME_NAMES for s in seeds]
    for step in rollout(specs, size=32, ss=1, n_frames=frames):
        rgb = step["rgb"]
    labels = torch.arange(len(THEME_NAMES)).repeat_interleave(len(seeds))
    return rgb, labels


def test_every_theme_renders_with_its_sky_or_ceiling():
    for name, theme in THEMES.items():
        world = World.from_seed(2, theme=name, size=32, aux=True, layout="courtyard", fog="clear")
        frame = world.step(None)
        assert frame.rgb.shape == (32, 32, 3) and frame.rgb.std() > 8, name
        above = SEG_SKY if theme.outdoor else SEG_CEILING
        assert (frame.seg == above).mean() > 0.1, name
        assert np.isfinite(frame.depth[frame.seg != SEG_SKY]).all()


def test_themes_are_separable_by_a_colour_histogram_classifier():
    train, y_train = theme_frames(range(100, 116))
    test, y_test = theme_frames(range(300, 316), frames=12)
    h_train, h_test = hsv_histogram(train).sqrt(), hsv_histogram(test).sqrt()
    centroids = torch.stack([h_train[y_train == k].mean(0) for k in range(len(THEME_NAMES))])
    predicted = torch.cdist(h_test, centroids).argmin(1)
    accuracy = (predicted == y_test).float().mean().item()
    print(f"theme classifier accuracy on held-out renders: {accuracy:.3f}")
    assert accuracy > 0.95, accuracy


def test_captions_name_the_theme_and_modifiers():
    look = Look("ice_cave", time_of_day="night", fog="foggy", torches=True, layout="caves")
    rng = np.random.default_rng(0)
    captions = {make_caption(look, rng) for _ in range(40)}
    assert len(captions) > 25  # templates x synonyms give variety
    theme = THEMES["ice_cave"]
    for c in captions:
        assert any(p in c.lower() for p in theme.places), c
        assert any(w in c for w in ("night", "midnight", "dark")), c
        assert any(w in c for w in ("fog", "mist", "haze")), c
    heldout = {make_caption(look, rng, split="heldout") for _ in range(20)}
    assert heldout.isdisjoint(captions)


def test_prompts_map_to_looks():
    assert match_prompt("a foggy frozen cavern at night") == Look(
        "ice_cave", time_of_day="night", fog="foggy", layout="caves")
    look = match_prompt("Cyberpunk street in the rain at dusk")
    assert (look.theme, look.weather, look.time_of_day) == ("neon_city", "rain", "sunset")
    assert match_prompt("rainy dungeon").weather == "none"  # no weather under a ceiling
    assert match_prompt("something else entirely", default_theme="hedge_garden").theme == "hedge_garden"
    for name, theme in THEMES.items():
        assert match_prompt(f"exploring the {theme.title}").theme == name


def test_attribute_vector_is_one_hot_per_group():
    look = Look("desert_ruins", time_of_day="sunset", weather="snow", torches=True, layout="maze")
    vec = look.attributes()
    assert vec.shape == (N_ATTRIBUTES,) and vec.sum() == 6
    on = {ATTRIBUTE_NAMES[i] for i in vec.nonzero()[:, 0].tolist()}
    assert on == {"theme=desert_ruins", "time=sunset", "fog=clear", "weather=snow", "torches",
                  "layout=maze"}
    with pytest.raises(ValueError):
        Look("stone_dungeon", weather="rain")
