"""recscope.offline (see ARCHITECTURE.md)."""
