"""The synthetic demo dataset: a simulated tree of life written in BIOSCAN-5M's layout."""

from clibd.data.demo.generate import DEFAULT_SPECIMENS, ensure_demo, generate_demo, simulate_demo

__all__ = ["DEFAULT_SPECIMENS", "ensure_demo", "generate_demo", "simulate_demo"]
