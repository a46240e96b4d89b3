"""recscope.experiments (see ARCHITECTURE.md)."""
