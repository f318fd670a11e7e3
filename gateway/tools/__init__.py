"""Tools that stand above the gateway (demo helpers, the outward probe); they import anything."""
