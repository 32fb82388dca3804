"""phxq.plog — see DESIGN.md §2."""
