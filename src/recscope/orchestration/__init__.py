"""recscope.orchestration (see ARCHITECTURE.md)."""
