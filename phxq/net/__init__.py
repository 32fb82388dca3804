"""phxq.net — see DESIGN.md §2."""
