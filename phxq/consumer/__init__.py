"""phxq.consumer — see DESIGN.md §2."""
