"""Long made-up series for the time-series task's long-horizon checks: written as date,value CSV files."""
import numpy as np


def ar_noise(n, phi, sigma, rng):
    """AR(1) noise e_t = φ e_{t-1} + N(0, σ²)."""
    e = np.zeros(n)
    shocks = rng.normal(0, sigma, n)
    for t in range(1, n):
        e[t] = phi * e[t - 1] + shocks[t]
    return e


def write_csv(path, dates, values):
    """A ``date,value`` CSV with a header."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("date,value\n" + "".join(f"{d},{v:.3f}\n" for d, v in zip(dates, values)))
    return path


def monthly_cycle(path, years=250, seed=11):
    """Monthly values with a sunspot-like 132-month (11-year) cycle of varying amplitude and AR(1) noise."""
    rng = np.random.default_rng(seed)
    n = 12 * years
    t = np.arange(n)
    amplitude = 100 + 40 * np.sin(2 * np.pi * t / (132 * 7.3))
    values = 25 + amplitude * (0.5 + 0.5 * np.sin(2 * np.pi * t / 132)) + ar_noise(n, 0.7, 6.0, rng)
    dates = [f"{1750 + i // 12}-{i % 12 + 1:02d}" for i in range(n)]
    return write_csv(path, dates, values)


def daily_season(path, years=10, seed=5):
    """Daily values with a yearly season (365.25 days), a slow trend and AR(1) noise."""
    rng = np.random.default_rng(seed)
    n = 365 * years
    t = np.arange(n)
    values = 15 + 0.0005 * t + 8 * np.sin(2 * np.pi * t / 365.25) + ar_noise(n, 0.7, 2.0, rng)
    dates = [f"d{i}" for i in range(n)]
    return write_csv(path, dates, values)
