"""phxq.lock — see DESIGN.md §2."""
