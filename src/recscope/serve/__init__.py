"""recscope.serve (see ARCHITECTURE.md)."""
