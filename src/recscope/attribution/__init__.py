"""recscope.attribution (see ARCHITECTURE.md)."""
