"""recscope.sim (see ARCHITECTURE.md)."""
