"""phxq.client — see DESIGN.md §2."""
