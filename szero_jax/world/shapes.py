"""Object silhouettes as inside-tests in object coordinates (radius 1, before rotation/scale).

Every shape fits in the disc of radius `EXTENT`, which bounds the pixels a renderer visits.
"""
import numpy as np

EXTENT = 1.5


def sample_params(rng, shape):
    """Shape-specific parameters (a tuple of floats)."""
    if shape in ("ellipse", "rectangle"):
        return (float(rng.uniform(1.25, 1.45)),)  # aspect; stays inside EXTENT
    if shape == "blob":
        return tuple(float(x) for x in np.concatenate(
            [rng.uniform(-0.15, 0.15, 3), rng.uniform(0, 2 * np.pi, 3)]))
    if shape == "ring":
        return (float(rng.uniform(0.4, 0.65)),)  # inner radius
    if shape == "star":
        return (float(rng.uniform(0.4, 0.6)),)   # inner/outer radius ratio
    return ()


def inside(shape, params, u, v):
    """Boolean mask of the points (u, v) inside the shape."""
    if shape == "disc":
        return u * u + v * v <= 1.0
    if shape == "ellipse":
        a = params[0]
        return (u / a) ** 2 + (v * a) ** 2 <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.85
    if shape == "rectangle":
        a = params[0]
        return (np.abs(u) <= 0.85 * a) & (np.abs(v) <= 0.85 / a)
    if shape in ("triangle", "pentagon", "hexagon"):
        n = {"triangle": 3, "pentagon": 5, "hexagon": 6}[shape]
        radius = 1.3 if n == 3 else 1.1
        theta = np.arctan2(v, u) + np.pi / 2  # a vertex points up
        sector = np.mod(theta, 2 * np.pi / n) - np.pi / n
        return np.hypot(u, v) * np.cos(sector) <= radius * np.cos(np.pi / n)
    if shape == "star":
        inner, outer = params[0] * 1.35, 1.35
        theta = np.arctan2(v, u) + np.pi / 2
        t = np.abs(np.mod(theta, 2 * np.pi / 5) / (2 * np.pi / 5) - 0.5) * 2  # 1 at the points
        return np.hypot(u, v) <= inner + (outer - inner) * t
    if shape == "blob":
        amps, phases = params[:3], params[3:]
        theta = np.arctan2(v, u)
        r = 1.0 + sum(a * np.cos((k + 2) * theta + p) for k, (a, p) in enumerate(zip(amps, phases)))
        return np.hypot(u, v) <= r
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= params[0] ** 2)
    raise ValueError(f"shape: expected one of the world's shapes, got {shape!r}")
