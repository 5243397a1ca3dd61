"""The console's pages; `_ui` holds what they share (engine, context, formatting)."""
