"""recscope.pipeline (see ARCHITECTURE.md)."""
