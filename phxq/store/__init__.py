"""phxq.store — see DESIGN.md §2."""
