"""The world's fixed caption vocabulary, colour naming and caption grammar.

Captions are built only from `VOCABULARY`, so a tiny word-level tokenizer is a lookup table.
Words are separated by spaces; "," is its own token (see `tokenize`).
"""
import colorsys

import numpy as np

# name -> representative RGB used to tint textures; each lies well inside its own
# `colour_name` bin so a tinted texture keeps its name.
COLOURS = {
    "red": (0.85, 0.10, 0.10),
    "orange": (0.95, 0.55, 0.10),
    "yellow": (0.95, 0.90, 0.15),
    "green": (0.15, 0.70, 0.20),
    "cyan": (0.10, 0.80, 0.85),
    "blue": (0.15, 0.30, 0.90),
    "purple": (0.55, 0.20, 0.80),
    "pink": (0.95, 0.45, 0.70),
    "brown": (0.45, 0.28, 0.12),
    "white": (0.93, 0.93, 0.93),
    "gray": (0.50, 0.50, 0.50),
    "black": (0.08, 0.08, 0.08),
}
SIZES = ("small", "medium", "large")
SHAPES = ("disc", "ellipse", "square", "rectangle", "triangle", "pentagon", "hexagon",
          "star", "blob", "ring")
PATTERNS = ("striped", "checkered", "dotted", "mottled", "marbled")
# caption word -> skimage.data loader name (all bundled with scikit-image, no download)
PHOTOS = {
    "astronaut": "astronaut", "coffee": "coffee", "cat": "chelsea", "rocket": "rocket",
    "brick": "brick", "grass": "grass", "gravel": "gravel", "galaxy": "hubble_deep_field",
    "cells": "immunohistochemistry", "moon": "moon", "coins": "coins",
}
DIRECTIONS = ("left", "right", "up", "down")
MOTIONS = ("moving", "bouncing", "circling", "spinning", "approaching", "receding", "still",
           "drifting")
_GLUE = ("a", "an", "and", ",", "in", "front", "of", "sloping", "background")

VOCABULARY = tuple(sorted(set(_GLUE + tuple(COLOURS) + SIZES + SHAPES + PATTERNS
                              + tuple(PHOTOS) + DIRECTIONS + MOTIONS)))


def colour_name(rgb):
    """Name of an RGB colour in [0, 1] (hue bins in HSV; low saturation -> white/gray/black)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.shape != (3,) or not np.all(np.isfinite(rgb)):
        raise ValueError(f"rgb: expected 3 finite values, got {rgb!r}")
    h, s, v = colorsys.rgb_to_hsv(*np.clip(rgb, 0.0, 1.0))
    h *= 360.0
    if s < 0.25 or v < 0.15:
        return "black" if v < 0.3 else "white" if v > 0.75 else "gray"
    if 15 <= h < 50 and v < 0.55:
        return "brown"
    for upper, name in ((15, "red"), (45, "orange"), (70, "yellow"), (160, "green"),
                        (200, "cyan"), (260, "blue"), (300, "purple"), (345, "pink")):
        if h < upper:
            return name
    return "red"


def article(word):
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(*words):
    """'a large red striped disc' with the article the first word needs."""
    return " ".join((article(words[0]),) + words)


def tokenize(caption):
    """Split a caption into vocabulary words; raises if a word is outside `VOCABULARY`."""
    if not isinstance(caption, str):
        raise ValueError(f"caption: expected a str, got {type(caption).__name__}")
    words = tuple(caption.replace(",", " , ").split())
    unknown = sorted(set(words) - set(VOCABULARY))
    if unknown:
        raise ValueError(f"caption: words outside the world vocabulary: {unknown}")
    return words
