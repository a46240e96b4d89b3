"""recscope.ope (see ARCHITECTURE.md)."""
